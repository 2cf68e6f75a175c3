package runner

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/outboxmta/outbox/spool"
	"github.com/outboxmta/outbox/upstream"
)

// gatedUpstream delivers every recipient once its gate is opened, and tells
// started when an attempt begins.
type gatedUpstream struct {
	name    string
	started chan string // message IDs
	gate    chan struct{}
}

func (g *gatedUpstream) Deliver(ctx context.Context, m *upstream.Message) ([]upstream.Result, error) {
	io.Copy(io.Discard, m.Body)
	g.started <- m.ID
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var out []upstream.Result
	for _, r := range m.Recipients {
		out = append(out, upstream.Result{Recipient: r, Status: upstream.Delivered, Code: 250, Text: "ok by " + g.name})
	}
	return out, nil
}

func waitID(t *testing.T, ch chan string, what string) string {
	t.Helper()
	select {
	case id := <-ch:
		return id
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	return ""
}

// An attempt in flight finishes with the client it began with; attempts
// that start after Reconfigure use the new one.
func TestReconfigureDuringAttempt(t *testing.T) {
	old := &gatedUpstream{name: "old", started: make(chan string, 4), gate: make(chan struct{})}
	r, sp := newTestRunner(t, old)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	first := queue(t, sp, "one@example.net")
	r.Enqueue(first.ID, first.NextAttempt)
	if id := waitID(t, old.started, "the first attempt"); id != first.ID {
		t.Fatalf("old client got %s, want %s", id, first.ID)
	}

	next := &gatedUpstream{name: "new", started: make(chan string, 4), gate: make(chan struct{})}
	close(next.gate)
	r.Reconfigure(next, Policy{RetryMin: time.Second, RetryMax: time.Minute, Lifetime: time.Hour}, "new.example:587")
	second := queue(t, sp, "two@example.net")
	r.Enqueue(second.ID, second.NextAttempt)
	if id := waitID(t, next.started, "the second attempt"); id != second.ID {
		t.Fatalf("new client got %s, want %s", id, second.ID)
	}
	close(old.gate) // the first attempt ends, with the old client
	for _, id := range []string{first.ID, second.ID} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, _, err := sp.Read(spool.Queue, id); err != nil {
				break // delivered and removed
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still queued", id)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	select {
	case id := <-old.started:
		t.Errorf("old client used again after Reconfigure, for %s", id)
	default:
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestAlive(t *testing.T) {
	r, _ := newTestRunner(t, &fakeUpstream{})
	r.opts.Heartbeat = 10 * time.Millisecond
	if !r.Alive(time.Second) {
		t.Fatal("a new runner is not alive")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	// Idle, the loop still wakes every heartbeat.
	time.Sleep(200 * time.Millisecond)
	if !r.Alive(150 * time.Millisecond) {
		t.Error("an idle running runner is not alive")
	}

	// A loop that cannot get its lock is stuck.
	r.mu.Lock()
	time.Sleep(200 * time.Millisecond)
	stuck := r.Alive(150 * time.Millisecond)
	r.mu.Unlock()
	if stuck {
		t.Error("a blocked runner counts as alive")
	}
	deadline := time.Now().Add(10 * time.Second)
	for !r.Alive(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the runner did not come back to life")
		}
		time.Sleep(5 * time.Millisecond)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if r.Alive(150 * time.Millisecond) {
		t.Error("a stopped runner counts as alive")
	}
}
