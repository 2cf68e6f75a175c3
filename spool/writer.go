package spool

import (
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
)

// Writer streams one new message into the spool. Write the message, then
// Commit to publish it durably, or Abort to leave nothing behind.
type Writer struct {
	s    *Spool
	st   State
	id   string
	f    *os.File
	n    int64
	crc  hash.Hash32
	done bool
}

// Create starts a new record in state st. It fails with an error matching
// ErrNoSpace when the free space is below the reserve (see SetMinFree) or
// the file system is full.
func (s *Spool) Create(st State) (*Writer, error) {
	if err := s.checkFree(); err != nil {
		return nil, err
	}
	id := NewID(s.now())
	f, err := os.OpenFile(filepath.Join(s.dir(st), tmpPrefix+id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return nil, fmt.Errorf("spool: create %s: %w", id, noSpace(err))
	}
	if _, err := f.WriteString(header); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("spool: write %s: %w", id, noSpace(err))
	}
	return &Writer{s: s, st: st, id: id, f: f, crc: crc32.New(castagnoli)}, nil
}

// ID returns the queue ID the message will have.
func (w *Writer) ID() string { return w.id }

// Write appends message bytes. An error matching ErrNoSpace means the file
// system is full; Abort then removes what was written.
func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.n += int64(n)
	w.crc.Write(p[:n])
	if err != nil {
		return n, fmt.Errorf("spool: write %s: %w", w.id, noSpace(err))
	}
	return n, nil
}

// Size is the number of message bytes written so far.
func (w *Writer) Size() int64 { return w.n }

// Commit writes the envelope, makes the record durable and publishes it under
// its ID. It sets env.ID and env.Size, and Arrived and NextAttempt when zero.
// When Commit returns nil the message is safely queued; on error nothing is
// left behind, and the error matches ErrNoSpace if the file system was full.
func (w *Writer) Commit(env *Envelope) error {
	if w.done {
		return fmt.Errorf("spool: commit %s: already finished", w.id)
	}
	env.ID, env.Size = w.id, w.n
	if env.Arrived.IsZero() {
		env.Arrived = w.s.now()
	}
	if env.NextAttempt.IsZero() {
		env.NextAttempt = env.Arrived
	}
	if err := w.commit(env); err != nil {
		w.Abort()
		return fmt.Errorf("spool: commit %s: %w", w.id, noSpace(err))
	}
	return nil
}

func (w *Writer) commit(env *Envelope) error {
	if err := writeTail(w.f, env, w.n, w.crc.Sum32()); err != nil {
		return err
	}
	if err := w.sync(); err != nil {
		return err
	}
	if err := w.f.Close(); err != nil {
		return err
	}
	w.done = true
	tmp := w.f.Name()
	if err := renameNoReplace(tmp, w.s.path(w.st, w.id)); err != nil {
		os.Remove(tmp)
		return err
	}
	if w.s.noSync {
		return nil
	}
	err := w.s.syncers[w.st].sync()
	if errors.Is(err, fs.ErrPermission) {
		// A submitter may write into incoming/ without reading it (mode
		// 1730, as Postfix's maildrop), and opening a directory to fsync
		// it needs read permission. syncfs on the new record makes its
		// directory entry durable just the same.
		err = syncFS(w.s.path(w.st, w.id))
	}
	if err != nil {
		// The record may or may not survive a crash now; remove it so that
		// the caller's failure report stays true.
		os.Remove(w.s.path(w.st, w.id))
		return err
	}
	return nil
}

// sync makes the record's content durable.
func (w *Writer) sync() error {
	if w.s.noSync {
		return nil
	}
	return w.f.Sync()
}

// writeTail appends the envelope and trailer after a message of bodyLen
// bytes with checksum bodyCRC.
func writeTail(f *os.File, env *Envelope, bodyLen int64, bodyCRC uint32) error {
	envLine, err := encodeEnvelope(env)
	if err != nil {
		return err
	}
	t := trailer{bodyLen: bodyLen, bodyCRC: bodyCRC, envLen: int64(len(envLine)), envCRC: crc32.Checksum(envLine, castagnoli)}
	_, err = f.Write(append(envLine, t.bytes()...))
	return err
}

// Abort discards the record. It is safe to call after Commit failed or
// succeeded (then it does nothing).
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.f.Name())
}
