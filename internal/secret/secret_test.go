package secret

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/outboxmta/outbox/internal/testutil"
)

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	for _, tt := range []struct {
		name    string
		mode    os.FileMode
		content string
		err     string // "" for success
	}{
		{"owner only", 0o600, "x\n", ""},
		{"owner read-only", 0o400, "x\n", ""},
		{"our group", 0o640, "x\n", ""},
		{"world-readable", 0o644, "x\n", "accessible to every user (mode 0644)"},
		{"world-writable", 0o602, "x\n", "run chmod o-rwx " + path},
		{"too large", 0o600, strings.Repeat("x", maxSize+1), "larger than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			testutil.WriteFile(t, path, []byte(tt.content), tt.mode)
			os.Chmod(path, tt.mode) // WriteFile's mode is subject to the umask
			b, err := ReadFile("password_file", path)
			switch {
			case tt.err == "" && (err != nil || string(b) != tt.content):
				t.Errorf("ReadFile = %.20q, %v; want %.20q", b, err, tt.content)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err) || !strings.HasPrefix(err.Error(), "password_file")):
				t.Errorf("ReadFile error = %v, want one starting with the key and containing %q", err, tt.err)
			}
		})
	}
	if _, err := ReadFile("password_file", dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory: %v", err)
	}
	if _, err := ReadFile("password_file", filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("a missing file: %v", err)
	}
}

// A file readable by a group that is neither ours, root's nor outbox is
// refused; the same file without group access is fine, and so is one
// readable by root's group (install -o outbox -m 0640 as root).
func TestForeignGroup(t *testing.T) {
	g, err := foreignGroup()
	if err != nil {
		t.Skip(err)
	}
	path := filepath.Join(t.TempDir(), "secret")
	testutil.WriteFile(t, path, []byte("x\n"), 0o640)
	os.Chmod(path, 0o640)
	if err := os.Chown(path, -1, g); err != nil {
		t.Skip("cannot chgrp:", err)
	}
	if _, err := ReadFile("refresh_token_file", path); err == nil || !strings.Contains(err.Error(), "is accessible to group") || !strings.Contains(err.Error(), "chmod g-rwx") {
		t.Errorf("0640 foreign group: error = %v", err)
	}
	os.Chmod(path, 0o600)
	if _, err := ReadFile("refresh_token_file", path); err != nil {
		t.Errorf("0600 foreign group: %v", err)
	}
	os.Chmod(path, 0o640)
	if err := os.Chown(path, -1, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile("refresh_token_file", path); err != nil {
		t.Errorf("0640 group root: %v", err)
	}
}

func foreignGroup() (int, error) {
	for _, name := range []string{"mail", "daemon", "nogroup", "users"} {
		g, err := user.LookupGroup(name)
		if err != nil {
			continue
		}
		gid, _ := strconv.Atoi(g.Gid)
		if !trustedGroup(gid) {
			return gid, nil
		}
	}
	return 0, fmt.Errorf("no foreign group found")
}
