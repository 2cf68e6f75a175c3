package airgap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/outboxmta/outbox/internal/safeio"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// removeStale removes the files matching pattern in dir that a crashed
// run left behind, creating dir if need be.
func removeStale(dir, pattern string) {
	os.MkdirAll(dir, 0o750)
	old, _ := filepath.Glob(filepath.Join(dir, pattern))
	for _, f := range old {
		if fi, err := os.Stat(f); err == nil && time.Since(fi.ModTime()) > time.Hour {
			os.Remove(f)
		}
	}
}

// publish renames the finished file tmp to name, never replacing an
// existing file, and makes the name durable. Bundles often go to removable
// media (vfat has neither hard links nor, on old kernels,
// RENAME_NOREPLACE), so the fallback is a check before a plain rename.
func publish(tmp, name string) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, name, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		if _, lerr := os.Lstat(name); lerr == nil {
			err = unix.EEXIST
		} else {
			err = os.Rename(tmp, name)
		}
	}
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%s: %w", name, fs.ErrExist)
	}
	if err != nil {
		return fmt.Errorf("rename %s: %w", name, err)
	}
	return safeio.SyncDir(filepath.Dir(name))
}
