package spool

import (
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"testing"
	"time"
)

// recordOf returns the stored bytes of a record, as an export ships them.
func recordOf(t *testing.T, s *Spool, st State, id string) []byte {
	t.Helper()
	l, err := s.LockIn(st, id)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b, err := io.ReadAll(l.Record())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBatchCopiesRecordsUnderNewIDs(t *testing.T) {
	src, dst := openTemp(t), openTemp(t)
	a := put(t, src, "Subject: a\r\n\r\none\r\n", "x@example.com")
	b := put(t, src, "Subject: b\r\n\r\ntwo\r\n", "y@example.com", "z@example.com")

	batch := dst.NewBatch(Queue)
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	var staged []string
	for _, env := range []*Envelope{a, b} {
		got, err := batch.Add(bytes.NewReader(recordOf(t, src, Queue, env.ID)), func(e *Envelope) error {
			if e.ID != env.ID {
				t.Errorf("edit sees ID %s, want the record's own %s", e.ID, env.ID)
			}
			e.Imported = &Imported{At: at, Source: "src.test", ID: e.ID, Bundle: "B"}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		staged = append(staged, got.ID)
	}
	// Staged records are invisible until Commit.
	if envs := scanAll(t, dst, Queue); len(envs) != 0 {
		t.Fatalf("before Commit, queue/ shows %d records", len(envs))
	}
	ids, err := batch.Commit()
	if err != nil || !slices.Equal(ids, staged) {
		t.Fatalf("Commit = %v, %v; want %v", ids, err, staged)
	}
	for i, env := range []*Envelope{a, b} {
		got, body, err := dst.Read(Queue, ids[i])
		if err != nil {
			t.Fatal(err)
		}
		_, want, _ := src.Read(Queue, env.ID)
		if !bytes.Equal(body, want) || got.From != env.From || len(got.Recipients) != len(env.Recipients) {
			t.Errorf("record %d: %+v %q", i, got, body)
		}
		if got.Imported == nil || got.Imported.ID != env.ID || !got.Since().Equal(at) {
			t.Errorf("record %d: imported %+v, since %v", i, got.Imported, got.Since())
		}
	}
}

func TestBatchRefusesDamagedRecordAndAbortLeavesNothing(t *testing.T) {
	src, dst := openTemp(t), openTemp(t)
	env := put(t, src, "Subject: a\r\n\r\nbody\r\n", "x@example.com")
	rec := recordOf(t, src, Queue, env.ID)
	batch := dst.NewBatch(Queue)
	if _, err := batch.Add(bytes.NewReader(rec), func(*Envelope) error { return nil }); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{
		"flipped": func() []byte { b := bytes.Clone(rec); b[len(header)+2] ^= 1; return b }(),
		"short":   rec[:len(rec)-5],
	} {
		if _, err := batch.Add(bytes.NewReader(bad), func(*Envelope) error { return nil }); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s record: %v, want ErrCorrupt", name, err)
		}
	}
	batch.Abort()
	entries, _ := os.ReadDir(dst.dir(Queue))
	if len(entries) != 0 {
		t.Errorf("after Abort queue/ holds %d files", len(entries))
	}
}

func TestMoveAllAndRemoveAllSkipLockedRecords(t *testing.T) {
	s := openTemp(t)
	a := put(t, s, "a\r\n", "x@example.com")
	b := put(t, s, "b\r\n", "x@example.com")
	l, err := s.Lock(b.ID) // being delivered
	if err != nil {
		t.Fatal(err)
	}
	moved, err := s.MoveAll([]string{a.ID, b.ID, "0000000000000000"}, Queue, Exported)
	if err != nil || !slices.Equal(moved, []string{a.ID}) {
		t.Fatalf("MoveAll = %v, %v; want only %s", moved, err, a.ID)
	}
	l.Close()
	if st, _ := s.Find(a.ID); st != Exported {
		t.Errorf("%s is in %s", a.ID, st)
	}
	removed, err := s.RemoveAll([]string{a.ID, b.ID}, Exported)
	if err != nil || !slices.Equal(removed, []string{a.ID}) {
		t.Fatalf("RemoveAll = %v, %v; want only %s (the other is not exported)", removed, err, a.ID)
	}
	if st, _ := s.Find(b.ID); st != Queue {
		t.Errorf("%s is in %s, want untouched in queue", b.ID, st)
	}
	if err := s.Requeue(b.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// When the directory fsync after the renames fails, Commit removes the
// records it renamed: it must not report them as published, or the caller
// (an import journaling what it queued) would take them for queued.
func TestBatchCommitDirSyncFailureReportsNothingPublished(t *testing.T) {
	src, dst := openTemp(t), openTemp(t)
	a := put(t, src, "Subject: a\r\n\r\none\r\n", "x@example.com")
	batch := dst.NewBatch(Queue)
	if _, err := batch.Add(bytes.NewReader(recordOf(t, src, Queue, a.ID)), func(*Envelope) error { return nil }); err != nil {
		t.Fatal(err)
	}
	dst.syncers[Queue] = newDirSyncer(t.TempDir() + "/gone") // its fsync fails
	ids, err := batch.Commit()
	if err == nil {
		t.Fatal("Commit succeeded although the directory fsync failed")
	}
	for _, id := range ids {
		if _, _, rerr := dst.Read(Queue, id); rerr != nil {
			t.Errorf("Commit reported %s published, but it is not in queue/: %v", id, rerr)
		}
	}
}
