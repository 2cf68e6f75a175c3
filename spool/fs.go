package spool

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// renameNoReplace renames oldpath to newpath unless newpath exists, so that
// two writers that drew the same ID can never overwrite each other.
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// A file system without RENAME_NOREPLACE: link fails if newpath
		// exists, which gives the same guarantee in two steps.
		if err = os.Link(oldpath, newpath); err == nil {
			err = os.Remove(oldpath)
		}
		return err
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}

func fsyncDir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", path, err)
	}
	return nil
}

// syncFS flushes the whole file system holding path (syncfs(2)): the
// fallback when a directory cannot be opened to fsync it.
func syncFS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", path, err)
	}
	return nil
}

// dirSyncer makes directory entries durable, sharing one fsync among all
// callers that arrive while another fsync is running (group commit): under
// concurrent load the directory is synced far fewer times than files are
// renamed into it, and every caller still returns only after an fsync that
// started after its rename.
type dirSyncer struct {
	path string

	mu      sync.Mutex
	cond    sync.Cond
	running bool
	started uint64 // generation of the newest fsync started
	done    uint64 // generation of the newest fsync finished
	err     error  // result of the newest fsync finished
}

func newDirSyncer(path string) *dirSyncer {
	d := &dirSyncer{path: path}
	d.cond.L = &d.mu
	return d
}

func (d *dirSyncer) sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	// An fsync already running may have started before our rename: wait
	// for the one after it.
	want := d.started + 1
	for d.done < want {
		if d.running {
			d.cond.Wait()
			continue
		}
		d.running = true
		d.started++
		gen := d.started
		d.mu.Unlock()
		err := fsyncDir(d.path)
		d.mu.Lock()
		d.running = false
		d.done, d.err = gen, err
		d.cond.Broadcast()
	}
	return d.err
}
