// Package safeio replaces small files so that a crash leaves the old
// content or the new, never neither and never a torn mix: the air-gap
// journal and acknowledgements, the OAuth2 refresh tokens. The spool has
// its own, batched, path for records (spool/fs.go).
package safeio

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// WriteFile replaces the file at path with data: a temporary file in the
// same directory (a dot name ending in ".tmp", which directory pollers
// skip), created with perm (less the umask), given to prepare (to change
// its owner or mode; may be nil), written, fsynced and renamed over path;
// then the directory is fsynced. On error the temporary file is removed
// and path is as it was.
func WriteFile(path string, data []byte, perm os.FileMode, prepare func(*os.File) error) error {
	dir, base := filepath.Split(path)
	var f *os.File
	var err error
	for range 100 {
		tmp := filepath.Join(dir, "."+base+"."+strconv.FormatUint(rand.Uint64(), 36)+".tmp")
		f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if !errors.Is(err, os.ErrExist) {
			break
		}
	}
	if err != nil {
		return err
	}
	tmp := f.Name()
	if prepare != nil {
		err = prepare(f)
	}
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir fsyncs the directory dir, making the names just created or
// renamed in it durable. A file system that cannot sync a directory
// (EINVAL) has nothing more to make durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
