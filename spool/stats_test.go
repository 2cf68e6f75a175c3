package spool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIDTime(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 123456000, time.UTC)
	got, ok := IDTime(NewID(now))
	if !ok || !got.Equal(now) {
		t.Errorf("IDTime(NewID(%v)) = %v, %v", now, got, ok)
	}
	if _, ok := IDTime("../etc/passwd"); ok {
		t.Error("IDTime accepted a path")
	}
}

func TestCount(t *testing.T) {
	s, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, oldest, err := s.Count(Queue); n != 0 || oldest != "" || err != nil {
		t.Fatalf("empty queue: %d %q %v", n, oldest, err)
	}
	var first string
	for range 3 {
		env := &Envelope{From: "a@example.com", Recipients: []Recipient{{Addr: "b@example.net", Status: Pending}}}
		if err := s.Put(Queue, env, strings.NewReader("Subject: x\r\n\r\nbody\r\n")); err != nil {
			t.Fatal(err)
		}
		if first == "" {
			first = env.ID // IDs are given at Create, in arrival order
		}
	}
	// Neither a temporary file nor a stranger counts.
	os.WriteFile(filepath.Join(s.Root(), "queue", tmpPrefix+"x"), nil, 0o600)
	os.WriteFile(filepath.Join(s.Root(), "queue", "README"), nil, 0o600)
	n, oldest, err := s.Count(Queue)
	if n != 3 || oldest != first || err != nil {
		t.Errorf("Count = %d %q %v, want 3 %q", n, oldest, err, first)
	}
}

// BenchmarkCount is the cost of the queue gauges at each metrics scrape,
// for a queue of 100,000 messages (names only: Count reads no record).
func BenchmarkCount(b *testing.B) {
	s, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for i := range 100_000 {
		f, err := os.Create(filepath.Join(s.Root(), "queue", NewID(now.Add(time.Duration(i)*time.Microsecond))))
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	b.ResetTimer()
	for b.Loop() {
		if n, _, err := s.Count(Queue); err != nil || n != 100_000 {
			b.Fatalf("Count = %d, %v", n, err)
		}
	}
}
