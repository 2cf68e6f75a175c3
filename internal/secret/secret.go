// Package secret reads the files that hold Outbox's secrets (upstream
// passwords, OAuth2 client secrets and refresh tokens, the air-gap signing
// key, the listener's password hashes) with one rule for who else may
// read them, so that every such file is refused for the same reason and
// with the same fix.
package secret

import (
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strconv"
	"syscall"
)

// DaemonGroup is the group the packaging gives the daemon (docs/design.md):
// a secret file may be readable by it, as root:outbox 0640.
const DaemonGroup = "outbox"

// maxSize bounds what is read: a secret, even a file of password hashes
// for a few thousand users, is far smaller, and a mistaken path (a log,
// a device) must not be read whole into memory.
const maxSize = 1 << 20

// ReadFile returns the contents of the secret file at path, named by its
// config key in errors ("password_file /etc/outbox/pw is ..."). It refuses
// a file that is not a regular file, that every user can access, or whose
// group has access when that group is not a trusted one (see trustedGroup).
func ReadFile(key, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		// The *PathError names the file and the reason.
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if err := checkMode(key, path, fi); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", key, path, err)
	}
	if len(b) > maxSize {
		return nil, fmt.Errorf("%s %s is larger than %d bytes: is it the right file?", key, path, maxSize)
	}
	return b, nil
}

// checkMode applies ReadFile's rule to fi, the file at path.
func checkMode(key, path string, fi os.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s %s is not a regular file", key, path)
	}
	perm := fi.Mode().Perm()
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
	fix := "chmod g-rwx " + path
	if _, err := user.LookupGroup(DaemonGroup); err == nil {
		fix += ", or chgrp " + DaemonGroup + " " + path
	}
	return fmt.Errorf("%s %s is accessible to group %s (mode %04o), which is not ours: it holds a secret; run %s",
		key, path, groupName(int(st.Gid)), perm, fix)
}

// trustedGroup reports whether members of group gid may have access to
// our secrets: it is root's group, DaemonGroup, or a group we are in (the
// only way for us to read a file we do not own might be through it).
func trustedGroup(gid int) bool {
	if gid == 0 || gid == os.Getegid() {
		return true
	}
	if groups, err := os.Getgroups(); err == nil && slices.Contains(groups, gid) {
		return true
	}
	g, err := user.LookupGroup(DaemonGroup)
	return err == nil && g.Gid == strconv.Itoa(gid)
}

func groupName(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return g.Name
	}
	return strconv.Itoa(gid)
}
