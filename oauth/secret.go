package oauth

import (
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/outboxmta/outbox/internal/safeio"
	"github.com/outboxmta/outbox/internal/secret"
)

// readSecret reads the secret in the file at path, named by its config
// key in errors, refusing a file that others can read (secret.ReadFile).
func readSecret(key, path string) (string, error) {
	b, err := secret.ReadFile(key, path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s %s is empty", key, path)
	}
	return s, nil
}

// Owner is who a written secret file belongs to, and its mode.
type Owner struct {
	UID, GID int // -1: leave as created (the caller's)
	Mode     os.FileMode
}

// existingOwner returns the owner and mode of the file at path, or def
// when there is none.
func existingOwner(path string, def Owner) Owner {
	fi, err := os.Stat(path)
	if err != nil {
		return def
	}
	o := Owner{UID: -1, GID: -1, Mode: fi.Mode().Perm()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		o.UID, o.GID = int(st.Uid), int(st.Gid)
	}
	return o
}

// writeSecret replaces the file at path with secret atomically: a
// temporary file in the same directory, created with o's mode and owner,
// written and fsynced, renamed over path, and the directory fsynced. A
// crash leaves the old or the new secret, never neither. When we may not
// give the file its owner (the daemon is not root), we keep what we can:
// the group, then nothing.
func writeSecret(path, secret string, o Owner) error {
	return safeio.WriteFile(path, []byte(secret+"\n"), 0o600, func(f *os.File) error {
		if o.UID >= 0 || o.GID >= 0 {
			if err := f.Chown(o.UID, o.GID); err != nil && o.GID >= 0 {
				f.Chown(-1, o.GID) // a group we are in; else it stays ours
			}
		}
		return f.Chmod(o.Mode.Perm())
	})
}
