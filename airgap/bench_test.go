package airgap

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outboxmta/outbox/spool"
)

// Export and import of many messages: messages per second and the peak
// heap while it runs (sampled), which should not grow with the count
// beyond a few dozen bytes per message (IDs kept for the acknowledgement
// and the move to exported/).
//
//	go test ./airgap -run - -bench . -benchtime 1x
//	AIRGAP_BENCH_N=100000 go test ./airgap -run - -bench . -benchtime 1x
func BenchmarkExport(b *testing.B) {
	n := benchN()
	for b.Loop() {
		b.StopTimer()
		sp := fill(b, n)
		file := filepath.Join(b.TempDir(), "b.bundle")
		sel, _ := Select(sp, false)
		b.StartTimer()
		peak := measure(b, func() {
			if _, err := Export(context.Background(), sp, sel, file, Options{Host: "iso.test"}); err != nil {
				b.Fatal(err)
			}
		})
		report(b, n, peak)
	}
}

func BenchmarkImport(b *testing.B) {
	n := benchN()
	src := fill(b, n)
	sel, _ := Select(src, false)
	file := filepath.Join(b.TempDir(), "b.bundle")
	if _, err := Export(context.Background(), src, sel, file, Options{Host: "iso.test"}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		b.StopTimer()
		dst := openSpool(b)
		b.StartTimer()
		peak := measure(b, func() {
			res, err := Import(context.Background(), dst, file, Options{Host: "con.test", Keep: time.Hour})
			if err != nil || res.Queued != n {
				b.Fatal(res, err)
			}
		})
		report(b, n, peak)
	}
}

func benchN() int {
	if n, err := strconv.Atoi(os.Getenv("AIRGAP_BENCH_N")); err == nil {
		return n
	}
	return 10000
}

// fill queues n messages of about 2 KB, quickly: one real record copied
// through a batch.
func fill(b *testing.B, n int) *spool.Spool {
	b.Helper()
	sp := openSpool(b)
	one := queue(b, sp, 1)
	l, err := sp.Lock(one[0])
	if err != nil {
		b.Fatal(err)
	}
	rec, _ := io.ReadAll(l.Record())
	l.Close()
	sp.Delete(one[0])
	batch := sp.NewBatch(spool.Queue)
	for range n {
		if _, err := batch.Add(bytes.NewReader(rec), func(*spool.Envelope) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := batch.Commit(); err != nil {
		b.Fatal(err)
	}
	return sp
}

// measure runs fn and returns the peak heap in use while it ran.
func measure(b *testing.B, fn func()) uint64 {
	runtime.GC()
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
	fn()
	close(stop)
	wg.Wait()
	return peak.Load()
}

func report(b *testing.B, n int, peak uint64) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
}
