package spool

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Operations on many records at once, for air-gap bundles (package
// airgap): one file-system sync and one fsync per directory for the whole
// set instead of a few per record. Each record is still either wholly in
// one state or wholly in another after a crash.

// Batch adds many complete records to a state at once: each is staged as a
// temporary file, invisible to every reader, and Commit publishes them all.
// A Batch is not safe for concurrent use.
type Batch struct {
	s      *Spool
	st     State
	staged []string // IDs, each in a file tmpPrefix+ID in st
}

// NewBatch starts a batch of new records for state st.
func (s *Spool) NewBatch(st State) *Batch { return &Batch{s: s, st: st} }

// Add reads one complete record in format version 1 from r (as Locked.Record
// gives it), checks it whole, lets edit change its envelope (edit sees the
// record's own ID; an error from edit drops the record and is returned), and
// stages it under a new ID. It returns the staged envelope, with its new ID.
// A torn or damaged record is an error matching ErrCorrupt.
func (b *Batch) Add(r io.Reader, edit func(*Envelope) error) (*Envelope, error) {
	if err := b.s.checkFree(); err != nil {
		return nil, err
	}
	id := NewID(b.s.now())
	name := filepath.Join(b.s.dir(b.st), tmpPrefix+id)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return nil, fmt.Errorf("spool: create %s: %w", id, noSpace(err))
	}
	env, err := stage(f, r, id, edit)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = noSpace(cerr)
	}
	if err != nil {
		os.Remove(name)
		return nil, fmt.Errorf("spool: stage %s: %w", id, err)
	}
	b.staged = append(b.staged, id)
	return env, nil
}

// stage copies the record from r into f, verifies it, and rewrites its
// envelope after edit, under the new ID id.
func stage(f *os.File, r io.Reader, id string, edit func(*Envelope) error) (*Envelope, error) {
	if _, err := io.Copy(f, r); err != nil {
		return nil, noSpace(err)
	}
	env, t, err := readEnvelope(f)
	if err != nil {
		return nil, err
	}
	if err := verifyBody(f, t); err != nil {
		return nil, err
	}
	if err := edit(env); err != nil {
		return nil, err
	}
	env.ID = id
	end := int64(len(header)) + t.bodyLen
	if err := f.Truncate(end); err != nil {
		return nil, err
	}
	if _, err := f.Seek(end, io.SeekStart); err != nil {
		return nil, err
	}
	if err := writeTail(f, env, t.bodyLen, t.bodyCRC); err != nil {
		return nil, noSpace(err)
	}
	return env, nil
}

// Commit makes every staged record durable with one syncfs(2), publishes
// each under its ID and fsyncs the directory once. It returns the IDs
// published: all of them when err is nil. After an error, the records not
// published are removed.
func (b *Batch) Commit() ([]string, error) {
	defer b.Abort()
	if len(b.staged) == 0 {
		return nil, nil
	}
	if !b.s.noSync {
		if err := syncFS(b.s.dir(b.st)); err != nil {
			return nil, fmt.Errorf("spool: commit batch: %w", err)
		}
	}
	var done []string
	var err error
	for _, id := range b.staged {
		if rerr := renameNoReplace(filepath.Join(b.s.dir(b.st), tmpPrefix+id), b.s.path(b.st, id)); rerr != nil {
			err = fmt.Errorf("spool: commit batch: %w", rerr)
			break
		}
		done = append(done, id)
	}
	b.staged = b.staged[len(done):]
	if serr := b.syncDir(done); serr != nil {
		return nil, serr
	}
	return done, err
}

// syncDir makes the published records' names durable; if that fails they
// are removed again, so that the caller's failure report stays true: none
// of them is published.
func (b *Batch) syncDir(done []string) error {
	if b.s.noSync || len(done) == 0 {
		return nil
	}
	if err := b.s.syncers[b.st].sync(); err != nil {
		for _, id := range done {
			os.Remove(b.s.path(b.st, id))
		}
		return fmt.Errorf("spool: commit batch: %w", err)
	}
	return nil
}

// Abort removes every record not yet published.
func (b *Batch) Abort() {
	for _, id := range b.staged {
		os.Remove(filepath.Join(b.s.dir(b.st), tmpPrefix+id))
	}
	b.staged = nil
}

// Record returns the whole record as stored (header line, message,
// envelope, trailer): self-contained, for shipping it elsewhere as is.
func (l *Locked) Record() *io.SectionReader {
	return io.NewSectionReader(l.f, 0, l.t.recordLen())
}

// MoveAll moves the records ids from one state to another, each under its
// lock, and makes the moves durable with one fsync per directory. Records
// a runner is delivering (ErrLocked) or that are gone are skipped; it
// returns the IDs moved.
func (s *Spool) MoveAll(ids []string, from, to State) ([]string, error) {
	return s.eachLocked(ids, from, []State{from, to}, func(id string) error {
		return renameNoReplace(s.path(from, id), s.path(to, id))
	})
}

// RemoveAll deletes the records ids in state st, each under its lock, with
// one fsync of the directory; records locked or gone are skipped. It
// returns the IDs removed.
func (s *Spool) RemoveAll(ids []string, st State) ([]string, error) {
	return s.eachLocked(ids, st, []State{st}, func(id string) error {
		return os.Remove(s.path(st, id))
	})
}

// eachLocked runs op on every record of ids in st while holding its lock,
// then syncs the directories dirs.
func (s *Spool) eachLocked(ids []string, st State, dirs []State, op func(id string) error) ([]string, error) {
	var done []string
	var first error
	for _, id := range ids {
		err := s.withLock(st, id, op)
		switch {
		case err == nil:
			done = append(done, id)
		case errors.Is(err, ErrLocked), errors.Is(err, fs.ErrNotExist):
		case first == nil:
			first = err
		}
	}
	if len(done) > 0 && !s.noSync {
		for _, d := range dirs {
			if err := s.syncers[d].sync(); err != nil && first == nil {
				first = fmt.Errorf("spool: %w", err)
			}
		}
	}
	return done, first
}

func (s *Spool) withLock(st State, id string, op func(id string) error) error {
	if !ValidID(id) {
		return fmt.Errorf("spool: %q is not a queue ID", id)
	}
	p := s.path(st, id)
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := lockFile(f, p); err != nil {
		return err
	}
	if err := op(id); err != nil {
		return fmt.Errorf("spool: %s: %w", id, err)
	}
	return nil
}

// IDs returns the IDs of the records in st, unsorted, without reading
// them.
func (s *Spool) IDs(st State) ([]string, error) {
	d, err := os.Open(s.dir(st))
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("spool: read %s: %w", s.dir(st), err)
	}
	ids := names[:0]
	for _, n := range names {
		if ValidID(n) {
			ids = append(ids, n)
		}
	}
	return ids, nil
}
