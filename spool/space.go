package spool

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrNoSpace means the spool's file system has no room for new mail: it is
// full (ENOSPC), the writer's quota is used up (EDQUOT), or its free space
// is below the reserve set with SetMinFree. Errors from Create, Writer.Write
// and Writer.Commit match it with errors.Is when that is why they failed,
// so callers can tell "disk full, try later" from other failures. A record
// that failed this way has left nothing behind.
var ErrNoSpace = errors.New("no space left in the spool")

// SetMinFree sets the free-space reserve: Create refuses new records with
// ErrNoSpace while the spool's file system has fewer than bytes available
// to unprivileged users, so that the room left stays for rewriting the
// records already queued (every delivery attempt rewrites its record). Only
// Create checks it; Update and Move, which keep queued mail moving, do not.
// A message started just above the reserve may still use up to its own
// size of it, so the reserve should exceed the largest message accepted.
// Zero, the default, turns the check off. It is safe to call at any time.
func (s *Spool) SetMinFree(bytes int64) { s.minFree.Store(max(bytes, 0)) }

// FreeSpace returns the bytes available to unprivileged users on the spool's
// file system: what df shows as "Avail", which on most file systems excludes
// the blocks reserved for root.
func (s *Spool) FreeSpace() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(s.root, &st); err != nil {
		return 0, fmt.Errorf("spool: statfs %s: %w", s.root, err)
	}
	// f_bavail counts fragments of f_frsize bytes; on Linux f_frsize is
	// nearly always f_bsize, and older kernels leave it zero.
	unit := st.Frsize
	if unit <= 0 {
		unit = int64(st.Bsize)
	}
	return int64(st.Bavail) * unit, nil
}

// checkFree refuses a new record while free space is below the reserve.
func (s *Spool) checkFree() error {
	min := s.minFree.Load()
	if min <= 0 {
		return nil
	}
	free, err := s.FreeSpace()
	if err != nil {
		// Not knowing is no reason to refuse mail: a truly full disk still
		// fails the write, with ErrNoSpace.
		s.log.Warn("cannot check the spool's free space", "err", err)
		return nil
	}
	if free < min {
		return fmt.Errorf("spool: refusing new mail: %w: %s has %d bytes available, below the min_free reserve of %d bytes",
			ErrNoSpace, s.root, free, min)
	}
	return nil
}

// noSpaceError is an ENOSPC or EDQUOT error that also matches ErrNoSpace.
// Its text stays the system's ("no space left on device").
type noSpaceError struct{ err error }

func (e *noSpaceError) Error() string        { return e.err.Error() }
func (e *noSpaceError) Unwrap() error        { return e.err }
func (e *noSpaceError) Is(target error) bool { return target == ErrNoSpace }

// noSpace marks err as ErrNoSpace when the file system ran out of room.
func noSpace(err error) error {
	if err == nil || errors.Is(err, ErrNoSpace) {
		return err
	}
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return &noSpaceError{err}
	}
	return err
}
