package upstream

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock stands in for the wall clock: sleeping advances it.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	slept []time.Duration
}

func (f *fakeClock) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) sleep(_ context.Context, d time.Duration) error {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.slept = append(f.slept, d)
	f.mu.Unlock()
	return nil
}

func TestRateLimit(t *testing.T) {
	be := &backend{}
	host, port := startServer(t, be, serverOpts{})
	cfg := reuseCfg(host, port)
	cfg.MessagesPerMinute = 30 // one every 2s
	c := New(cfg, "client.test", nil)
	defer c.Close()
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	c.rate.now, c.rate.sleep = clk.now, clk.sleep

	for i := range 4 {
		mustDeliver(t, c, msg(i))
	}
	if got, want := clk.slept, []time.Duration{2 * time.Second, 2 * time.Second, 2 * time.Second}; !equalDurations(got, want) {
		t.Errorf("waited %v, want %v: the first at once, then one every 2s", got, want)
	}
	// After a quiet spell longer than the interval, the next goes at once.
	clk.sleep(context.Background(), time.Minute)
	mustDeliver(t, c, msg(4))
	if n := len(clk.slept); n != 4 {
		t.Errorf("waited %d times (%v), want no wait after a quiet minute", n, clk.slept)
	}
	txns, _, _, _ := be.snapshot()
	if len(txns) != 5 {
		t.Errorf("server saw %d messages, want 5", len(txns))
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRateLimitWaitCanceled: an attempt whose context ends while it waits
// for its turn fails without reaching the server, and gives its turn back.
func TestRateLimitWaitCanceled(t *testing.T) {
	be := &backend{}
	host, port := startServer(t, be, serverOpts{})
	cfg := reuseCfg(host, port)
	cfg.MessagesPerMinute = 1
	c := New(cfg, "client.test", nil)
	defer c.Close()
	mustDeliver(t, c, msg(0))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Deliver(ctx, msg(1))
	if e := asError(t, err); e.Op != "rate-limit" || !e.Temporary || !strings.Contains(e.Text, "messages_per_minute = 1") {
		t.Errorf("error = %+v, want temporary rate-limit error", e)
	}
	if _, mails, _, _ := be.snapshot(); mails != 1 {
		t.Errorf("server saw %d MAIL, want 1", mails)
	}
}

func TestNoRateLimitByDefault(t *testing.T) {
	if c := New(testCfg("127.0.0.1", 25, "none"), "client.test", nil); c.rate != nil {
		t.Errorf("messages_per_minute = 0 made a rate limit")
	}
}
