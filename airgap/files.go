package airgap

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/outboxmta/outbox/internal/safeio"
)

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
