package spool

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// State is a directory of the spool; see the package documentation.
type State string

const (
	Incoming State = "incoming"
	Queue    State = "queue"
	Hold     State = "hold"
	FailedQ  State = "failed"
	Corrupt  State = "corrupt"
	// Exported holds records written into an air-gap bundle (package
	// airgap) until the importing side acknowledges them: never
	// delivered, never expired.
	Exported State = "exported"
)

var states = []State{Incoming, Queue, Hold, FailedQ, Corrupt, Exported}

// tmpPrefix starts the name of every file still being written.
const tmpPrefix = "tmp-"

// staleTmp is how old a temporary file must be before a scan removes it: a
// writer in another process may still be filling a younger one.
const staleTmp = time.Hour

// Spool is one spool directory tree. It is safe for concurrent use.
type Spool struct {
	root    string
	log     *slog.Logger
	syncers map[State]*dirSyncer
	now     func() time.Time
	minFree atomic.Int64 // free-space reserve for new records; see SetMinFree
	noSync  bool         // tests only: skip fsyncs to fill large spools fast
}

// Open opens the spool at root, creating missing state directories.
func Open(root string, log *slog.Logger) (*Spool, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Spool{root: root, log: log, syncers: map[State]*dirSyncer{}, now: time.Now}
	for _, st := range states {
		dir := s.dir(st)
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		s.syncers[st] = newDirSyncer(dir)
	}
	return s, nil
}

// Root returns the spool's root directory.
func (s *Spool) Root() string { return s.root }

func (s *Spool) dir(st State) string { return filepath.Join(s.root, string(st)) }

func (s *Spool) path(st State, id string) string { return filepath.Join(s.root, string(st), id) }

// Put queues a message read from body in state st (Queue, or Incoming for a
// submitter without access to the queue). It returns once the record is
// durable. env.ID and env.Size are set by Put.
func (s *Spool) Put(st State, env *Envelope, body io.Reader) error {
	w, err := s.Create(st)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, body); err != nil {
		w.Abort()
		return err // Writer.Write says what and where
	}
	return w.Commit(env)
}

// Read returns the envelope and the verified message of the record id in st.
// It takes no lock: the record may change right after.
func (s *Spool) Read(st State, id string) (*Envelope, []byte, error) {
	if !ValidID(id) {
		return nil, nil, fmt.Errorf("spool: %q is not a queue ID", id)
	}
	f, err := os.Open(s.path(st, id))
	if err != nil {
		return nil, nil, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	env, t, err := readEnvelope(f)
	if err != nil {
		return nil, nil, fmt.Errorf("spool: read %s: %w", id, err)
	}
	body := make([]byte, t.bodyLen)
	if _, err := f.ReadAt(body, int64(len(header))); err != nil {
		return nil, nil, fmt.Errorf("spool: read %s: %w", id, err)
	}
	if err := verifyBody(f, t); err != nil {
		return nil, nil, fmt.Errorf("spool: read %s: %w", id, err)
	}
	return env, body, nil
}

// Scan calls fn with the envelope of every record in st. Records that are
// torn or damaged are moved to corrupt/ with a log line naming the file, and
// temporary files left by a crash are removed. Scan reads envelopes only, so
// it stays fast with a large queue; messages are checked when delivered.
func (s *Spool) Scan(st State, fn func(*Envelope) error) error {
	return s.ScanExcept(st, nil, fn)
}

// ScanExcept is Scan without reading the records whose ID skip reports
// true for: a periodic rescan that already knows most of the queue only
// pays for the records that are new to it.
func (s *Spool) ScanExcept(st State, skip func(id string) bool, fn func(*Envelope) error) error {
	d, err := os.Open(s.dir(st))
	if err != nil {
		return fmt.Errorf("spool: scan: %w", err)
	}
	defer d.Close()
	for {
		entries, err := d.ReadDir(1024)
		for _, e := range entries {
			if skip != nil && skip(e.Name()) {
				continue
			}
			if err := s.scanEntry(st, e, fn); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("spool: scan %s: %w", s.dir(st), err)
		}
	}
}

func (s *Spool) scanEntry(st State, e fs.DirEntry, fn func(*Envelope) error) error {
	name := e.Name()
	if strings.HasPrefix(name, tmpPrefix) {
		s.removeStaleTmp(st, name)
		return nil
	}
	if !e.Type().IsRegular() || !ValidID(name) {
		return nil
	}
	f, err := os.Open(s.path(st, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil // delivered or moved since the directory was read
	}
	if err != nil {
		return fmt.Errorf("spool: scan: %w", err)
	}
	env, _, err := readEnvelope(f)
	f.Close()
	switch {
	case errors.Is(err, ErrCorrupt):
		s.quarantine(st, name, err)
		return nil
	case err != nil:
		return fmt.Errorf("spool: scan %s: %w", name, err)
	case env.ID != name:
		s.quarantine(st, name, corrupt("file name differs from envelope id %s", env.ID))
		return nil
	}
	return fn(env)
}

func (s *Spool) removeStaleTmp(st State, name string) {
	p := s.path(st, name)
	fi, err := os.Stat(p)
	if err != nil || s.now().Sub(fi.ModTime()) < staleTmp {
		return
	}
	if err := os.Remove(p); err == nil {
		s.log.Info("removed stale temporary file", "file", p)
	}
}

// quarantine moves a damaged record out of the way, keeping it for
// inspection.
func (s *Spool) quarantine(st State, name string, why error) {
	from, to := s.path(st, name), s.path(Corrupt, name)
	if _, err := os.Stat(to); err == nil {
		to += "." + NewID(s.now())
	}
	if err := os.Rename(from, to); err != nil {
		s.log.Error("cannot quarantine corrupt record", "id", name, "file", from, "reason", why, "err", err)
		return
	}
	s.syncers[st].sync()
	s.syncers[Corrupt].sync()
	s.log.Error("quarantined corrupt record", "id", name, "file", from, "moved_to", to, "reason", why)
}

// Move renames record id from one state to another, durably. It is how
// queue/ records go on hold and come back, and how incoming/ records are
// taken into the queue.
func (s *Spool) Move(id string, from, to State) error {
	if !ValidID(id) {
		return fmt.Errorf("spool: %q is not a queue ID", id)
	}
	if err := renameNoReplace(s.path(from, id), s.path(to, id)); err != nil {
		return fmt.Errorf("spool: move %s to %s: %w", id, to, err)
	}
	if err := s.syncers[from].sync(); err != nil {
		return fmt.Errorf("spool: move %s: %w", id, err)
	}
	if err := s.syncers[to].sync(); err != nil {
		return fmt.Errorf("spool: move %s: %w", id, err)
	}
	return nil
}

// Accept takes record id from incoming/ into the queue after checking it
// whole, so a half-written or damaged drop never enters the queue. The
// submitter is whoever owns the file, whatever its envelope claims.
func (s *Spool) Accept(id string) error {
	l, err := s.LockIn(Incoming, id)
	if err != nil {
		return fmt.Errorf("spool: accept: %w", err)
	}
	defer l.Close()
	fi, err := l.f.Stat()
	if err != nil {
		return fmt.Errorf("spool: accept %s: %w", id, err)
	}
	env := l.Envelope()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		owner := int(st.Uid)
		if env.Origin.Kind != "maildrop" || env.Origin.UID == nil || *env.Origin.UID != owner {
			env.Origin.Kind, env.Origin.UID = "maildrop", &owner
			return l.MoveTo(Queue)
		}
	}
	return s.Move(id, Incoming, Queue)
}
