package main

// Upstream outage and flapping: the smarthost is down, then comes and goes
// (killed with SIGKILL, so some transactions die between its 250 and our
// record of it) while clients keep submitting. Every acknowledged message
// must arrive, whole; duplicates are counted; the retries back off.

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Retry policy of the outage test: short, so that several rounds of
// backoff fit in a few seconds.
const (
	outageRetryMin = 500 * time.Millisecond
	outageRetryMax = 2 * time.Second
)

// maxAttempts is the most delivery attempts a message may have made in
// elapsed since it arrived, if every delay is at least what the backoff
// promises: retry_min, doubling per attempt, up to retry_max. A slower
// machine makes fewer attempts, never more.
func maxAttempts(elapsed time.Duration) int {
	n, at, d := 1, time.Duration(0), outageRetryMin
	for at+d <= elapsed {
		at += d
		n++
		d = min(2*d, outageRetryMax)
	}
	return n
}

func TestMaxAttempts(t *testing.T) {
	for _, tt := range []struct {
		elapsed time.Duration
		want    int
	}{{0, 1}, {499 * time.Millisecond, 1}, {500 * time.Millisecond, 2}, {1500 * time.Millisecond, 3}, {3500 * time.Millisecond, 4}, {5500 * time.Millisecond, 5}} {
		if got := maxAttempts(tt.elapsed); got != tt.want {
			t.Errorf("maxAttempts(%v) = %d, want %d", tt.elapsed, got, tt.want)
		}
	}
}

// submitBatch runs clients concurrent SMTP clients of perClient messages
// each, markers crash-round-client-n, and fails the test on any error:
// the daemon stays up throughout.
func submitBatch(t *testing.T, w *world, round, clients, perClient int, l *ledger) {
	t.Helper()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			if err := submitLoop(w.listen, fmt.Sprintf("crash-%d-%d", round, c), perClient, l); err != nil {
				t.Errorf("round %d client %d: %v", round, c, err)
			}
		})
	}
	wg.Wait()
}

// checkBackoff fails the test if a queued message made more attempts than
// the backoff allows since it arrived.
func checkBackoff(t *testing.T, w *world) {
	t.Helper()
	for _, e := range w.queue(t) {
		elapsed := time.Since(e.Arrived)
		if e.Attempts > maxAttempts(elapsed) {
			t.Errorf("%s: %d attempts in %v: retries do not back off (at most %d)",
				e.ID, e.Attempts, elapsed.Round(time.Millisecond), maxAttempts(elapsed))
		}
	}
}

var deferredRE = regexp.MustCompile(`msg=deferred id=([0-9A-Z]+) .* attempts=([0-9]+)`)

// TestUpstreamFlapping takes the upstream down and brings it back several
// times while clients submit.
func TestUpstreamFlapping(t *testing.T) {
	const rounds, clients, perClient = 4, 4, 5
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("up and down times from seed %d", seed)
	w := newWorld(t)
	w.holdPorts(t)
	w.edit(t, `retry_min = "1s"`, fmt.Sprintf("retry_min = %q", outageRetryMin))
	w.edit(t, `retry_max = "2s"`, fmt.Sprintf("retry_max = %q", outageRetryMax))
	w.startServe(t)
	l := newLedger()

	// The outage: nothing can be delivered, and the retries slow down.
	submitBatch(t, w, 0, clients, perClient, l)
	waitFor(t, "a message to be tried four times", func() bool {
		for _, e := range w.queue(t) {
			if e.Attempts >= 4 {
				return true
			}
		}
		return false
	})
	checkBackoff(t, w)
	if n := len(w.delivered(t)); n > 0 {
		t.Fatalf("%d messages delivered with the upstream down", n)
	}

	// Flapping: up for a moment, killed (perhaps mid-transaction), down
	// for a while, with clients submitting all along.
	for round := 1; round <= rounds; round++ {
		w.startSink(t)
		submitBatch(t, w, round, clients, perClient, l)
		up := time.Duration(100+rng.IntN(500)) * time.Millisecond
		time.Sleep(up)
		w.stopSinkWith(t, syscall.SIGKILL)
		down := time.Duration(500+rng.IntN(1500)) * time.Millisecond
		t.Logf("round %d: upstream up for %v, then down for %v; %d delivered so far", round, up, down, len(w.delivered(t)))
		time.Sleep(down)
	}
	checkBackoff(t, w)

	w.startSink(t)
	waitDelivered(t, w, l)
	r := checkDelivered(t, w, l)
	dups := logDuplicates(t, r)
	checkAllArrived(t, w, l, r)
	if len(l.acked) != len(l.tried) {
		t.Errorf("%d of %d messages acknowledged with the daemon up", len(l.acked), len(l.tried))
	}
	checkSpoolClean(t, w)

	// The log shows the backoff: one message deferred again and again,
	// with its attempt count.
	w.serve.stop(t, syscall.SIGTERM)
	attempts := map[string][]int{}
	for _, m := range deferredRE.FindAllStringSubmatch(w.serve.out.String(), -1) {
		n, _ := strconv.Atoi(m[2])
		attempts[m[1]] = append(attempts[m[1]], n)
	}
	most := 0
	for id, seq := range attempts {
		for i, n := range seq {
			if n != i+1 {
				t.Errorf("%s deferred with attempts %v, want 1, 2, 3, …", id, seq)
				break
			}
		}
		most = max(most, len(seq))
	}
	if most < 4 {
		t.Errorf("no message logged as deferred four times (most: %d):\n%s", most, w.serve.out)
	}
	t.Logf("submitted %d, acknowledged %d, delivered %d, duplicated %d; up to %d deferrals per message",
		len(l.tried), len(l.acked), len(r.delivered), dups, most)
}
