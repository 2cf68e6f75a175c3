package spool

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

func openTemp(t *testing.T) *Spool {
	t.Helper()
	s, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t *testing.T, s *Spool, body string, rcpts ...string) *Envelope {
	t.Helper()
	env := &Envelope{From: "a@example.com", Origin: Origin{Kind: "smtp", Client: "127.0.0.1:1234"}}
	for _, r := range rcpts {
		env.Recipients = append(env.Recipients, Recipient{Addr: r, Status: Pending})
	}
	if err := s.Put(Queue, env, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	return env
}

func scanAll(t *testing.T, s *Spool, st State) []*Envelope {
	t.Helper()
	var envs []*Envelope
	if err := s.Scan(st, func(e *Envelope) error { envs = append(envs, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return envs
}

func TestPutReadScan(t *testing.T) {
	s := openTemp(t)
	body := "Subject: hi\r\n\r\nbinary \x00\xff body\r\n"
	env := put(t, s, body, "b@example.com", "c@example.com")
	if !ValidID(env.ID) || env.Size != int64(len(body)) || env.Arrived.IsZero() || env.NextAttempt != env.Arrived {
		t.Fatalf("Put filled envelope badly: %+v", env)
	}
	got, msg, err := s.Read(Queue, env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg) != body {
		t.Errorf("message = %q, want %q", msg, body)
	}
	if got.From != "a@example.com" || len(got.Recipients) != 2 || got.Recipients[1].Addr != "c@example.com" {
		t.Errorf("envelope = %+v", got)
	}
	envs := scanAll(t, s, Queue)
	if len(envs) != 1 || envs[0].ID != env.ID {
		t.Fatalf("scan = %v", envs)
	}
	// Nothing but the record is left in the directory.
	entries, _ := os.ReadDir(s.dir(Queue))
	if len(entries) != 1 {
		t.Errorf("queue/ holds %d entries, want 1", len(entries))
	}
}

// The format is documented as readable with ordinary tools: the envelope is
// the second to last line and the message follows the header line.
func TestRecordReadableWithTools(t *testing.T) {
	s := openTemp(t)
	env := put(t, s, "Subject: x\r\n\r\nbody\r\n", "b@example.com")
	raw, err := os.ReadFile(s.path(Queue, env.ID))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	if lines[0] != "OUTBOX-SPOOL 1" {
		t.Errorf("first line %q", lines[0])
	}
	if envLine := lines[len(lines)-2]; !strings.HasPrefix(envLine, `{"id":"`+env.ID) {
		t.Errorf("envelope line %q", envLine)
	}
	if tr := lines[len(lines)-1]; !strings.HasPrefix(tr, "OUTBOX-END body=") || len(tr)+1 != trailerLen {
		t.Errorf("trailer %q", tr)
	}
}

func TestLockUpdateRemove(t *testing.T) {
	s := openTemp(t)
	env := put(t, s, "Subject: x\r\n\r\nbody\r\n", "b@example.com", "c@example.com")

	l, err := s.Lock(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(env.ID); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Lock: %v, want ErrLocked", err)
	}
	e := l.Envelope()
	e.Recipients[0].Status = Delivered
	e.Attempts++
	if err := l.Update(); err != nil {
		t.Fatal(err)
	}
	// Still exclusive after the replacement file took the old one's place.
	if _, err := s.Lock(env.ID); !errors.Is(err, ErrLocked) {
		t.Fatalf("Lock after Update: %v, want ErrLocked", err)
	}
	body, _ := io.ReadAll(l.Body())
	if string(body) != "Subject: x\r\n\r\nbody\r\n" {
		t.Errorf("body after update = %q", body)
	}
	l.Close()

	got, _, err := s.Read(Queue, env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Attempts != 1 || got.Recipients[0].Status != Delivered || got.Recipients[1].Status != Pending {
		t.Errorf("persisted envelope = %+v", got)
	}
	if p := got.Pending(); len(p) != 1 || p[0] != "c@example.com" {
		t.Errorf("Pending() = %v", p)
	}

	l, err = s.Lock(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Remove(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := s.Lock(env.ID); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Lock after Remove: %v, want not exist", err)
	}
}

func TestMoveTo(t *testing.T) {
	s := openTemp(t)
	env := put(t, s, "x\r\n", "b@example.com")
	l, err := s.Lock(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	l.Envelope().Recipients[0].Status = Failed
	if err := l.MoveTo(FailedQ); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if n := len(scanAll(t, s, Queue)); n != 0 {
		t.Errorf("queue has %d records", n)
	}
	failed := scanAll(t, s, FailedQ)
	if len(failed) != 1 || failed[0].Recipients[0].Status != Failed {
		t.Errorf("failed = %+v", failed)
	}
}

// Damaged records are never delivered: each kind of damage is quarantined.
func TestCorruptRecords(t *testing.T) {
	tests := []struct {
		name   string
		damage func(raw []byte) []byte
		byScan bool // found by Scan (envelope damage) or only by Lock (message damage)
	}{
		{"truncated", func(r []byte) []byte { return r[:len(r)-10] }, true},
		{"torn half", func(r []byte) []byte { return r[:len(r)/2] }, true},
		{"empty", func(r []byte) []byte { return nil }, true},
		{"bad header", func(r []byte) []byte { r[0] = 'X'; return r }, true},
		{"flipped envelope byte", func(r []byte) []byte {
			i := bytes.LastIndex(r, []byte(`"from"`))
			r[i+2] ^= 0x20
			return r
		}, true},
		{"flipped message byte", func(r []byte) []byte { r[len(header)+3] ^= 1; return r }, false},
		{"appended garbage", func(r []byte) []byte { return append(r, "junk"...) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTemp(t)
			env := put(t, s, "Subject: x\r\n\r\nbody\r\n", "b@example.com")
			p := s.path(Queue, env.ID)
			raw, _ := os.ReadFile(p)
			if err := os.WriteFile(p, tt.damage(raw), 0o640); err != nil {
				t.Fatal(err)
			}
			if tt.byScan {
				if envs := scanAll(t, s, Queue); len(envs) != 0 {
					t.Fatalf("scan returned damaged record %+v", envs[0])
				}
			} else {
				if _, err := s.Lock(env.ID); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Lock: %v, want ErrCorrupt", err)
				}
			}
			if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("damaged record still in queue/")
			}
			if _, err := os.Stat(s.path(Corrupt, env.ID)); err != nil {
				t.Errorf("damaged record not kept in corrupt/: %v", err)
			}
		})
	}
}

func TestScanRemovesOnlyStaleTmp(t *testing.T) {
	s := openTemp(t)
	w, err := s.Create(Queue)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("half a message"))
	fresh := filepath.Join(s.dir(Queue), tmpPrefix+w.ID())
	stale := filepath.Join(s.dir(Queue), tmpPrefix+"OLD")
	os.WriteFile(stale, []byte("x"), 0o640)
	old := time.Now().Add(-2 * staleTmp)
	os.Chtimes(stale, old, old)

	if envs := scanAll(t, s, Queue); len(envs) != 0 {
		t.Fatalf("scan returned a temporary file: %+v", envs)
	}
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Error("stale temporary file kept")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Error("a writer's fresh temporary file was removed")
	}
	w.Abort()
	if _, err := os.Stat(fresh); !errors.Is(err, fs.ErrNotExist) {
		t.Error("Abort left its temporary file")
	}
}

func TestCommitFailureLeavesNothing(t *testing.T) {
	s := openTemp(t)
	w, err := s.Create(Queue)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("x\r\n"))
	// Make the rename fail: the target name is taken.
	if err := os.WriteFile(s.path(Queue, w.ID()), nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(&Envelope{}); err == nil {
		t.Fatal("Commit over an existing record succeeded")
	}
	entries, _ := os.ReadDir(s.dir(Queue))
	if len(entries) != 1 {
		t.Errorf("queue/ holds %d entries after failed commit, want only the squatter", len(entries))
	}
}

func TestIDs(t *testing.T) {
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	var ids []string
	seen := map[string]bool{}
	for i := range 1000 {
		id := NewID(base.Add(time.Duration(i) * time.Microsecond))
		if !ValidID(id) {
			t.Fatalf("NewID gave invalid %q", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
		ids = append(ids, id)
	}
	if !sort.StringsAreSorted(ids) {
		t.Error("IDs do not sort by time")
	}
	for _, bad := range []string{"", "../../etc/passwd", "0123456789ABCDEI", "0123456789abcdef", "0123456789ABCDE"} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}

// Concurrent writers all commit, and the shared directory fsync never lets
// one return before its entry was synced (checked by the generation logic;
// here we check nothing is lost or mixed up).
func TestConcurrentPut(t *testing.T) {
	s := openTemp(t)
	var wg sync.WaitGroup
	ids := make([]string, 64)
	for i := range ids {
		wg.Go(func() {
			env := &Envelope{From: "a@x", Recipients: []Recipient{{Addr: "b@x", Status: Pending}}}
			if err := s.Put(Queue, env, strings.NewReader(strings.Repeat("y", i)+"\r\n")); err != nil {
				t.Error(err)
			}
			ids[i] = env.ID
		})
	}
	wg.Wait()
	for i, id := range ids {
		env, body, err := s.Read(Queue, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(body) != i+2 || env.Size != int64(i+2) {
			t.Errorf("record %d has %d bytes", i, len(body))
		}
	}
}

func BenchmarkPut(b *testing.B) {
	s, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	body := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n"), 64) // 4 KiB
	b.SetBytes(int64(len(body)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			env := &Envelope{From: "a@x", Recipients: []Recipient{{Addr: "b@x", Status: Pending}}}
			if err := s.Put(Queue, env, bytes.NewReader(body)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A rescan that already knows a record does not read it again.
func TestScanExcept(t *testing.T) {
	s := openTemp(t)
	a := put(t, s, "a\r\n", "b@example.com")
	b := put(t, s, "b\r\n", "b@example.com")
	var got []string
	err := s.ScanExcept(Queue, func(id string) bool { return id == a.ID }, func(e *Envelope) error {
		got = append(got, e.ID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != b.ID {
		t.Errorf("ScanExcept returned %v, want only %s", got, b.ID)
	}
}
