package spool

// Benchmarks for the numbers that decide the spool's layout: how long the
// daemon's startup scan takes and how much memory the schedule it builds
// needs, and how many records per second Commit makes durable.
//
//	go test ./spool -run XXX -bench Scan -benchtime 1x
//	go test ./spool -run XXX -bench Commit -cpu 1,4

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// benchBody is a typical small application mail: 4 KiB.
var benchBody = bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n"), 64)

func benchEnvelope() *Envelope {
	uid := 33
	return &Envelope{
		From:       "app@example.com",
		Recipients: []Recipient{{Addr: "someone@example.net", Status: Pending}},
		Origin:     Origin{Kind: "sendmail", Client: "/run/outbox/submit.sock", UID: &uid},
	}
}

// fillQueue writes n records to queue/ through the normal writer, skipping
// the fsyncs only: durability is not what is measured, and 100k fsynced
// records would take minutes to create.
func fillQueue(b *testing.B, root string, n int) {
	b.Helper()
	s, err := Open(root, nil)
	if err != nil {
		b.Fatal(err)
	}
	s.noSync = true
	for range n {
		if err := s.Put(Queue, benchEnvelope(), bytes.NewReader(benchBody)); err != nil {
			b.Fatal(err)
		}
	}
}

// schedEntry is what the runner keeps per message (see docs/design.md:
// "Schedule memory").
type schedEntry struct {
	id  string
	due time.Time
}

// BenchmarkScan measures the startup scan of a flat queue/ directory, with
// a warm page cache, keeping what the runner's schedule keeps.
func BenchmarkScan(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			root := b.TempDir()
			fillQueue(b, root, n)
			// A fresh Spool, as the daemon has at startup.
			s, err := Open(root, nil)
			if err != nil {
				b.Fatal(err)
			}
			scan := func() []schedEntry {
				sched := make([]schedEntry, 0, 1024)
				err := s.Scan(Queue, func(e *Envelope) error {
					sched = append(sched, schedEntry{e.ID, e.NextAttempt})
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				if len(sched) != n {
					b.Fatalf("scan found %d records, want %d", len(sched), n)
				}
				return sched
			}

			scans := 0
			for b.Loop() {
				scan()
				scans++
			}
			perScan := b.Elapsed() / time.Duration(scans)
			b.ReportMetric(float64(perScan.Nanoseconds())/float64(n), "ns/record")
			b.ReportMetric(float64(perScan.Microseconds())/1000, "ms/scan")

			// Memory the schedule keeps once the scan's garbage is gone.
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			sched := scan()
			runtime.GC()
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/float64(n), "B/record")
			runtime.KeepAlive(sched)
		})
	}
}

// BenchmarkCommit measures durable commits of 4 KiB messages: one writer
// at a time, and many at once as under concurrent SMTP sessions, where the
// directory fsyncs are shared (group commit). Run with -cpu 1,4.
func BenchmarkCommit(b *testing.B) {
	put := func(s *Spool) error { return s.Put(Queue, benchEnvelope(), bytes.NewReader(benchBody)) }
	b.Run("serial", func(b *testing.B) {
		s, err := Open(b.TempDir(), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(benchBody)))
		n := 0
		for b.Loop() {
			if err := put(s); err != nil {
				b.Fatal(err)
			}
			n++
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
	})
	// 16 writers per GOMAXPROCS: they spend their time in fsync, not on
	// the CPU.
	b.Run("parallel", func(b *testing.B) {
		s, err := Open(b.TempDir(), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(benchBody)))
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := put(s); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
}
