package oauth

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"github.com/outboxmta/outbox/internal/safeio"
)

// daemonGroup is the group the packaging gives the daemon (docs/design.md):
// a secret file may be readable by it.
const daemonGroup = "outbox"

// readSecret reads the secret in the file at path, named by its config
// key in errors. It refuses a file that users other than its owner and
// the daemon's group can read: see checkMode.
func readSecret(key, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	if err := checkMode(key, path, fi); err != nil {
		return "", err
	}
	b := make([]byte, 64<<10)
	n, err := f.Read(b)
	if err != nil && n == 0 {
		return "", fmt.Errorf("%s %s: %w", key, path, err)
	}
	s := strings.TrimSpace(string(b[:n]))
	if s == "" {
		return "", fmt.Errorf("%s %s is empty", key, path)
	}
	return s, nil
}

// checkMode refuses a secret file that other users can read or write, or
// whose group can and is neither the group we run as nor the daemon's
// group "outbox" (the packaging's root:outbox 0640).
func checkMode(key, path string, fi os.FileInfo) error {
	perm := fi.Mode().Perm()
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s %s is not a regular file", key, path)
	}
	if perm&0o007 != 0 {
		return fmt.Errorf("%s %s is accessible to every user (mode %04o): it holds a secret; run chmod o-rwx %s", key, path, perm, path)
	}
	if perm&0o070 == 0 {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || trustedGroup(int(st.Gid)) {
		return nil
	}
	return fmt.Errorf("%s %s is readable by group %s (mode %04o): it holds a secret; run chmod g-rwx %s, or chgrp %s %s",
		key, path, groupName(int(st.Gid)), perm, path, daemonGroup, path)
}

func trustedGroup(gid int) bool {
	if gid == os.Getegid() {
		return true
	}
	g, err := user.LookupGroup(daemonGroup)
	return err == nil && g.Gid == strconv.Itoa(gid)
}

func groupName(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return g.Name
	}
	return strconv.Itoa(gid)
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
