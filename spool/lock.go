package spool

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrLocked means another runner is delivering the message right now.
var ErrLocked = errors.New("record is locked by another runner")

// Locked is a record held exclusively, for a delivery attempt or an
// administrator's command.
type Locked struct {
	s   *Spool
	st  State
	id  string
	f   *os.File
	t   trailer
	env *Envelope
}

// Lock takes the record id in queue/ for delivery. It returns ErrLocked if
// another runner holds it, an error matching fs.ErrNotExist if it is gone,
// and ErrCorrupt (after moving it to corrupt/) if it is damaged. The message
// checksum is verified, so a damaged message is never sent.
func (s *Spool) Lock(id string) (*Locked, error) { return s.LockIn(Queue, id) }

// LockIn is Lock for a record in state st.
func (s *Spool) LockIn(st State, id string) (*Locked, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("spool: %q is not a queue ID", id)
	}
	p := s.path(st, id)
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("spool: lock %s: %w", id, err)
	}
	if err := lockFile(f, p); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: lock %s: %w", id, err)
	}
	env, t, err := readEnvelope(f)
	if err == nil {
		err = verifyBody(f, t)
	}
	if err == nil && env.ID != id {
		err = corrupt("file name differs from envelope id %s", env.ID)
	}
	if err != nil {
		f.Close()
		if errors.Is(err, ErrCorrupt) {
			s.quarantine(st, id, err)
		}
		return nil, fmt.Errorf("spool: lock %s: %w", id, err)
	}
	return &Locked{s: s, st: st, id: id, f: f, t: t, env: env}, nil
}

// lockFile takes an exclusive flock on f without waiting, and makes sure f
// is still the file at p: a runner that opened the record just before
// another one replaced or removed it must not deliver the stale copy.
func lockFile(f *os.File, p string) error {
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return ErrLocked
		}
		return err
	}
	held, err := f.Stat()
	if err != nil {
		return err
	}
	now, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err != nil || !os.SameFile(held, now) {
		return ErrLocked
	}
	return nil
}

// Envelope returns the record's envelope. Change it and call Update to
// persist the change.
func (l *Locked) Envelope() *Envelope { return l.env }

// Body returns a reader of the message, from its start.
func (l *Locked) Body() io.Reader {
	return io.NewSectionReader(l.f, int64(len(header)), l.t.bodyLen)
}

// Update durably replaces the record with one carrying the current
// envelope. The new file is locked before it is renamed into place, so the
// attempt stays exclusive.
func (l *Locked) Update() error {
	if err := l.update(); err != nil {
		return fmt.Errorf("spool: update %s: %w", l.id, noSpace(err))
	}
	return nil
}

func (l *Locked) update() error {
	dir := l.s.dir(l.st)
	f, err := os.OpenFile(filepath.Join(dir, tmpPrefix+l.id+"-"+NewID(l.s.now())), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return err
	}
	if _, err := f.WriteString(header); err != nil {
		return err
	}
	// *os.File.ReadFrom copies the message inside the kernel where it can.
	if _, err := f.ReadFrom(io.NewSectionReader(l.f, int64(len(header)), l.t.bodyLen)); err != nil {
		return err
	}
	if err := writeTail(f, l.env, l.t.bodyLen, l.t.bodyCRC); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), l.s.path(l.st, l.id)); err != nil {
		return err
	}
	ok = true
	l.f.Close()
	l.f = f
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if l.t, err = readTrailer(f, fi.Size()); err != nil {
		return err
	}
	return l.s.syncers[l.st].sync()
}

// Remove deletes the record: every recipient is done, or an administrator
// deleted it.
func (l *Locked) Remove() error {
	if err := os.Remove(l.s.path(l.st, l.id)); err != nil {
		return fmt.Errorf("spool: remove %s: %w", l.id, err)
	}
	if err := l.s.syncers[l.st].sync(); err != nil {
		return fmt.Errorf("spool: remove %s: %w", l.id, err)
	}
	return nil
}

// MoveTo updates the record with the current envelope and moves it to
// state st. The lock is kept.
func (l *Locked) MoveTo(st State) error {
	if err := l.Update(); err != nil {
		return err
	}
	if st == l.st {
		return nil
	}
	if err := l.s.Move(l.id, l.st, st); err != nil {
		return err
	}
	l.st = st
	return nil
}

// State returns the state the record is in.
func (l *Locked) State() State { return l.st }

// Close releases the lock.
func (l *Locked) Close() error { return l.f.Close() }
