package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// Administrator's operations. Each takes the record's lock first, so none
// of them can change a message while a runner is delivering it: they fail
// with ErrLocked instead, and the administrator tries again.

// Find returns the state directory that holds id.
func (s *Spool) Find(id string) (State, error) {
	if !ValidID(id) {
		return "", fmt.Errorf("spool: %q is not a queue ID", id)
	}
	for _, st := range []State{Queue, Hold, FailedQ, Incoming, Corrupt, Exported} {
		if _, err := os.Lstat(s.path(st, id)); err == nil {
			return st, nil
		}
	}
	return "", fmt.Errorf("spool: %s: %w", id, fs.ErrNotExist)
}

// Hold stops delivery of a queued message until Release.
func (s *Spool) Hold(id string) error {
	l, err := s.Lock(id)
	if err != nil {
		return err
	}
	defer l.Close()
	return s.Move(id, Queue, Hold)
}

// Release puts a held message back in the queue.
func (s *Spool) Release(id string) error {
	l, err := s.LockIn(Hold, id)
	if err != nil {
		return err
	}
	defer l.Close()
	return s.Move(id, Hold, Queue)
}

// Delete removes a message from whichever state holds it, without
// delivering it and without telling its sender.
func (s *Spool) Delete(id string) error {
	st, err := s.Find(id)
	if err != nil {
		return err
	}
	if st == Corrupt {
		if err := os.Remove(s.path(st, id)); err != nil {
			return fmt.Errorf("spool: delete %s: %w", id, err)
		}
		return s.syncers[st].sync()
	}
	l, err := s.LockIn(st, id)
	if err != nil {
		return err
	}
	defer l.Close()
	return l.Remove()
}

// Requeue makes a message due now, from the queue, hold, failed/ or
// exported/ (a bundle that never arrived): failed recipients become pending
// again and the queue lifetime starts anew.
func (s *Spool) Requeue(id string, now time.Time) error {
	st, err := s.Find(id)
	if err != nil {
		return err
	}
	if st != Queue && st != Hold && st != FailedQ && st != Exported {
		return fmt.Errorf("spool: requeue %s: it is in %s/, not in the queue, hold, failed or exported", id, st)
	}
	l, err := s.LockIn(st, id)
	if err != nil {
		return err
	}
	defer l.Close()
	env := l.Envelope()
	for i := range env.Recipients {
		if env.Recipients[i].Status == Failed {
			env.Recipients[i].Status = Pending
		}
	}
	env.NextAttempt, env.Requeued, env.LastError = now, now, ""
	if env.Done() {
		return errors.New("spool: requeue " + id + ": every recipient was already delivered")
	}
	return l.MoveTo(Queue)
}
