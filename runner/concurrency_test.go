package runner_test

// Two runners on one spool directory, as two processes (the daemon and a
// foreground `outbox queue flush`) would be: the flock on each record must
// keep them from ever delivering a message twice.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outboxmta/outbox/internal/testutil"
	"github.com/outboxmta/outbox/runner"
	"github.com/outboxmta/outbox/spool"
	"github.com/outboxmta/outbox/upstream"
)

// countingDeliverer is one upstream shared by both runners. It counts every
// delivery of every (message ID, recipient), notes any message it is asked to
// deliver while an attempt for the same ID is still running, and keeps the
// bodies it was given.
type countingDeliverer struct {
	// oneByOne makes every attempt deliver only the first recipient it is
	// given and defer the others, so that each record is rewritten
	// (Update) once per further recipient while the other runner is
	// trying to lock it.
	oneByOne bool

	mu       sync.Mutex
	count    map[string]int    // "ID recipient" -> deliveries
	attempts map[string]int    // ID -> attempts
	bodies   map[string]string // ID -> body of the last attempt
	inflight map[string]bool   // IDs being delivered right now
	overlaps []string          // IDs delivered by two attempts at once
}

func newCountingDeliverer(oneByOne bool) *countingDeliverer {
	return &countingDeliverer{
		oneByOne: oneByOne,
		count:    map[string]int{}, attempts: map[string]int{},
		bodies: map[string]string{}, inflight: map[string]bool{},
	}
}

func (d *countingDeliverer) Deliver(ctx context.Context, m *upstream.Message) ([]upstream.Result, error) {
	d.mu.Lock()
	if d.inflight[m.ID] {
		d.overlaps = append(d.overlaps, m.ID)
	}
	d.inflight[m.ID] = true
	d.attempts[m.ID]++
	d.mu.Unlock()

	body, err := io.ReadAll(m.Body)
	// Widen the window in which the other runner may try the same record.
	time.Sleep(time.Millisecond + rand.N(2*time.Millisecond))

	d.mu.Lock()
	defer d.mu.Unlock()
	d.inflight[m.ID] = false
	if err != nil {
		return nil, &upstream.Error{Op: "data", Text: err.Error(), Temporary: true}
	}
	d.bodies[m.ID] = string(body)
	var out []upstream.Result
	for i, r := range m.Recipients {
		if d.oneByOne && i > 0 {
			out = append(out, upstream.Result{Recipient: r, Status: upstream.Deferred, Code: 451, Text: "try again"})
			continue
		}
		d.count[m.ID+" "+r]++
		out = append(out, upstream.Result{Recipient: r, Status: upstream.Delivered, Code: 250, Text: "ok"})
	}
	return out, nil
}

func TestTwoRunnersNoDoubleDelivery(t *testing.T) {
	testTwoRunners(t, false, "a@example.net")
}

// The same with three recipients delivered one per attempt: every record is
// rewritten twice under its lock while the other runner races to lock it,
// and each retry must send only what is still pending. A runner that locked
// the replaced file (opened just before the rename) would send a recipient
// again.
func TestTwoRunnersNoDoubleDeliveryWithRetries(t *testing.T) {
	testTwoRunners(t, true, "a@example.net", "b@example.net")
}

func testTwoRunners(t *testing.T, oneByOne bool, rcpts ...string) {
	const (
		before  = 300 // queued before the runners start
		during  = 100 // queued while they run, and announced to both
		workers = 4
	)
	dir := t.TempDir()
	sp := [2]*spool.Spool{}
	for i := range sp {
		var err error
		if sp[i], err = spool.Open(dir, nil); err != nil {
			t.Fatal(err)
		}
	}
	bodyOf := map[string]string{} // ID -> message queued
	put := func(s *spool.Spool, n int) *spool.Envelope {
		t.Helper()
		env := &spool.Envelope{From: "app@example.com"}
		for _, r := range rcpts {
			env.Recipients = append(env.Recipients, spool.Recipient{Addr: r, Status: spool.Pending})
		}
		body := fmt.Sprintf("Subject: message %d\r\n\r\nbody of message %d\r\n", n, n)
		if err := s.Put(spool.Queue, env, strings.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		bodyOf[env.ID] = body
		return env
	}
	for n := range before {
		put(sp[n%2], n)
	}

	up := newCountingDeliverer(oneByOne)
	var logged testutil.SyncBuffer // what the runners log at level Error: none is expected
	log := slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelError}))
	policy := runner.Policy{RetryMin: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond, Lifetime: time.Hour}
	var rs [2]*runner.Runner
	for i := range rs {
		// A short rescan makes each runner also plan messages the other
		// one is delivering right now.
		rs[i] = runner.New(sp[i], up, policy, runner.Options{Workers: workers, Rescan: 20 * time.Millisecond},
			log.With("runner", i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, len(rs))
	for _, r := range rs {
		go func() { errs <- r.Run(ctx) }()
	}
	for n := before; n < before+during; n++ {
		env := put(sp[n%2], n)
		for _, r := range rs {
			r.Enqueue(env.ID, env.NextAttempt)
		}
	}

	queueDir := filepath.Join(dir, string(spool.Queue))
	deadline := time.Now().Add(30 * time.Second)
	for {
		entries, err := os.ReadDir(queueDir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %d entries left in queue/, e.g. %s", len(entries), entries[0].Name())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	for range rs {
		if err := <-errs; err != nil {
			t.Errorf("Run: %v", err)
		}
	}

	up.mu.Lock()
	defer up.mu.Unlock()
	if len(up.overlaps) > 0 {
		t.Errorf("%d attempts overlapped another attempt of the same message, e.g. %s", len(up.overlaps), up.overlaps[0])
	}
	var once, dup, missing int
	for id, body := range bodyOf {
		for _, r := range rcpts {
			switch c := up.count[id+" "+r]; {
			case c == 1:
				once++
			case c == 0:
				missing++
				t.Errorf("%s to %s never delivered", id, r)
			default:
				dup++
				t.Errorf("%s to %s delivered %d times (%d attempts)", id, r, c, up.attempts[id])
			}
		}
		if got := up.bodies[id]; got != body {
			t.Errorf("%s: upstream got body %q, want %q", id, got, body)
		}
	}
	if len(up.count) != len(bodyOf)*len(rcpts) {
		t.Errorf("%d (message, recipient) pairs delivered, want %d", len(up.count), len(bodyOf)*len(rcpts))
	}
	for _, st := range []spool.State{spool.FailedQ, spool.Corrupt, spool.Hold, spool.Incoming} {
		if entries, _ := os.ReadDir(filepath.Join(dir, string(st))); len(entries) > 0 {
			t.Errorf("%d records in %s/, e.g. %s", len(entries), st, entries[0].Name())
		}
	}
	if s := logged.String(); s != "" {
		t.Errorf("runners logged errors:\n%s", s)
	}
	attempts := 0
	for _, n := range up.attempts {
		attempts += n
	}
	t.Logf("%d messages × %d recipients: %d delivered once, %d duplicates, %d missing; %d attempts",
		len(bodyOf), len(rcpts), once, dup, missing, attempts)
}
