package runner

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outboxmta/outbox/internal/testutil"
	"github.com/outboxmta/outbox/relay"
	"github.com/outboxmta/outbox/spool"
	"github.com/outboxmta/outbox/upstream"
)

// fakeUpstream answers per recipient from a table, or fails the whole
// attempt with err.
type fakeUpstream struct {
	mu      sync.Mutex
	replies map[string]upstream.Status
	err     error
	calls   [][]string // recipients of each attempt
	bodies  []string
}

func (f *fakeUpstream) Deliver(_ context.Context, m *upstream.Message) ([]upstream.Result, error) {
	body, _ := io.ReadAll(m.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, m.Recipients)
	f.bodies = append(f.bodies, string(body))
	if f.err != nil {
		return nil, f.err
	}
	var out []upstream.Result
	for _, r := range m.Recipients {
		st := f.replies[r]
		code := map[upstream.Status]int{upstream.Delivered: 250, upstream.Deferred: 450, upstream.Failed: 550}[st]
		out = append(out, upstream.Result{Recipient: r, Status: st, Code: code, Text: "reply for " + r})
	}
	return out, nil
}

func newTestRunner(t *testing.T, up Deliverer) (*Runner, *spool.Spool) {
	t.Helper()
	sp, err := spool.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := New(sp, up, Policy{RetryMin: time.Minute, RetryMax: time.Hour, Lifetime: 24 * time.Hour},
		Options{}, slog.New(slog.DiscardHandler))
	return r, sp
}

func queue(t *testing.T, sp *spool.Spool, rcpts ...string) *spool.Envelope {
	t.Helper()
	env := &spool.Envelope{From: "a@example.com"}
	for _, r := range rcpts {
		env.Recipients = append(env.Recipients, spool.Recipient{Addr: r, Status: spool.Pending})
	}
	if err := sp.Put(spool.Queue, env, strings.NewReader("Subject: t\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	return env
}

func read(t *testing.T, sp *spool.Spool, st spool.State, id string) *spool.Envelope {
	t.Helper()
	env, _, err := sp.Read(st, id)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func TestAttemptOutcomes(t *testing.T) {
	tests := []struct {
		name      string
		replies   map[string]upstream.Status
		err       error
		wantState spool.State // where the record ends up; "" when removed
		wantNext  bool        // planned again
		want      map[string]spool.RecipientStatus
	}{
		{
			name:      "all delivered",
			replies:   map[string]upstream.Status{"b@x": upstream.Delivered, "c@x": upstream.Delivered},
			wantState: "",
		},
		{
			name:      "mixed: only the deferred one stays",
			replies:   map[string]upstream.Status{"b@x": upstream.Delivered, "c@x": upstream.Deferred},
			wantState: spool.Queue, wantNext: true,
			want: map[string]spool.RecipientStatus{"b@x": spool.Delivered, "c@x": spool.Pending},
		},
		{
			name:      "one refused, one delivered: dead letter",
			replies:   map[string]upstream.Status{"b@x": upstream.Delivered, "c@x": upstream.Failed},
			wantState: spool.FailedQ,
			want:      map[string]spool.RecipientStatus{"b@x": spool.Delivered, "c@x": spool.Failed},
		},
		{
			name:      "connection refused: all deferred",
			err:       &upstream.Error{Op: "connect", Text: "connection refused", Temporary: true},
			wantState: spool.Queue, wantNext: true,
			want: map[string]spool.RecipientStatus{"b@x": spool.Pending, "c@x": spool.Pending},
		},
		{
			name:      "sender refused permanently: all failed",
			err:       &upstream.Error{Op: "mail", Code: 550, Text: "sender rejected"},
			wantState: spool.FailedQ,
			want:      map[string]spool.RecipientStatus{"b@x": spool.Failed, "c@x": spool.Failed},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := &fakeUpstream{replies: tt.replies, err: tt.err}
			r, sp := newTestRunner(t, up)
			env := queue(t, sp, "b@x", "c@x")
			before := time.Now()
			next, _ := r.attempt(context.Background(), env.ID, true)

			if up.bodies[0] != "Subject: t\r\n\r\nbody\r\n" {
				t.Errorf("upstream got body %q", up.bodies[0])
			}
			if next.IsZero() == tt.wantNext {
				t.Errorf("next attempt %v, want planned=%v", next, tt.wantNext)
			}
			if tt.wantNext && (next.Before(before.Add(time.Minute)) || next.After(before.Add(2*time.Minute))) {
				t.Errorf("next attempt %v not about retry_min after %v", next, before)
			}
			if tt.wantState == "" {
				for _, st := range []spool.State{spool.Queue, spool.FailedQ} {
					if _, _, err := sp.Read(st, env.ID); err == nil {
						t.Errorf("record still in %s", st)
					}
				}
				return
			}
			got := read(t, sp, tt.wantState, env.ID)
			if got.Attempts != 1 {
				t.Errorf("attempts = %d", got.Attempts)
			}
			for _, rc := range got.Recipients {
				if rc.Status != tt.want[rc.Addr] {
					t.Errorf("%s: status %s, want %s", rc.Addr, rc.Status, tt.want[rc.Addr])
				}
				if rc.Reply == "" {
					t.Errorf("%s: no reply recorded", rc.Addr)
				}
			}
		})
	}
}

// After a partial delivery only the recipients still pending are retried.
func TestRetryOnlyPending(t *testing.T) {
	up := &fakeUpstream{replies: map[string]upstream.Status{"b@x": upstream.Delivered, "c@x": upstream.Deferred}}
	r, sp := newTestRunner(t, up)
	env := queue(t, sp, "b@x", "c@x")
	r.attempt(context.Background(), env.ID, true)
	up.replies["c@x"] = upstream.Delivered
	if next, _ := r.attempt(context.Background(), env.ID, true); !next.IsZero() {
		t.Errorf("second attempt planned another at %v", next)
	}
	if len(up.calls) != 2 || len(up.calls[1]) != 1 || up.calls[1][0] != "c@x" {
		t.Errorf("attempts went to %v, want the second only to c@x", up.calls)
	}
}

func TestExpiry(t *testing.T) {
	up := &fakeUpstream{err: &upstream.Error{Op: "connect", Text: "refused", Temporary: true}}
	r, sp := newTestRunner(t, up)
	env := queue(t, sp, "b@x")
	r.attempt(context.Background(), env.ID, true)
	r.now = func() time.Time { return time.Now().Add(25 * time.Hour) }
	if next, _ := r.attempt(context.Background(), env.ID, true); !next.IsZero() {
		t.Errorf("expired message planned again at %v", next)
	}
	if len(up.calls) != 1 {
		t.Errorf("expired message was attempted again")
	}
	got := read(t, sp, spool.FailedQ, env.ID)
	if rc := got.Recipients[0]; rc.Status != spool.Failed || !strings.Contains(rc.Reply, "expired") || !strings.Contains(rc.Reply, "refused") {
		t.Errorf("expired recipient = %+v", rc)
	}
}

// A message another runner holds is skipped, not delivered twice.
func TestLockedMessageSkipped(t *testing.T) {
	up := &fakeUpstream{replies: map[string]upstream.Status{"b@x": upstream.Delivered}}
	r, sp := newTestRunner(t, up)
	env := queue(t, sp, "b@x")
	l, err := sp.Lock(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if next, _ := r.attempt(context.Background(), env.ID, true); next.IsZero() {
		t.Error("locked message dropped from the schedule")
	}
	if len(up.calls) != 0 {
		t.Error("locked message delivered")
	}
}

// Run delivers what is already queued at start, takes in incoming/ drops,
// and delivers what is enqueued while it runs.
func TestRun(t *testing.T) {
	up := &fakeUpstream{replies: map[string]upstream.Status{"b@x": upstream.Delivered}}
	r, sp := newTestRunner(t, up)
	queue(t, sp, "b@x")
	drop := &spool.Envelope{From: "a@x", Recipients: []spool.Recipient{{Addr: "b@x", Status: spool.Pending}}}
	if err := sp.Put(spool.Incoming, drop, strings.NewReader("dropped\r\n")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()

	calls := func() int { up.mu.Lock(); defer up.mu.Unlock(); return len(up.calls) }
	waitFor := func(n int) {
		deadline := time.Now().Add(10 * time.Second)
		for calls() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d attempts, want %d", calls(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor(2)
	env := queue(t, sp, "b@x")
	r.Enqueue(env.ID, env.NextAttempt)
	waitFor(3)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	n := 0
	sp.Scan(spool.Queue, func(*spool.Envelope) error { n++; return nil })
	if n != 0 {
		t.Errorf("%d messages left in the queue", n)
	}
}

func TestBackoff(t *testing.T) {
	p := Policy{RetryMin: time.Minute, RetryMax: time.Hour}
	for _, tt := range []struct {
		attempts int
		lo, hi   time.Duration
	}{
		{1, time.Minute, time.Minute + 15*time.Second},
		{2, 2 * time.Minute, 2*time.Minute + 30*time.Second},
		{4, 8 * time.Minute, 10 * time.Minute},
		{10, time.Hour, time.Hour + 15*time.Minute},
		{1000, time.Hour, time.Hour + 15*time.Minute},
	} {
		for range 50 {
			if d := p.Backoff(tt.attempts); d < tt.lo || d >= tt.hi {
				t.Errorf("Backoff(%d) = %v, want in [%v, %v)", tt.attempts, d, tt.lo, tt.hi)
			}
		}
	}
}

// Flush delivers messages whatever their schedule says; the daemon's
// runner leaves a message alone that a flush deferred meanwhile.
func TestFlushAndNotDue(t *testing.T) {
	up := &fakeUpstream{err: &upstream.Error{Op: "connect", Text: "refused", Temporary: true}}
	r, sp := newTestRunner(t, up)
	a := queue(t, sp, "b@x")
	b := queue(t, sp, "c@x")
	r.attempt(context.Background(), a.ID, true) // now deferred for a minute

	if next, outcome := r.attempt(context.Background(), a.ID, false); outcome != "not due" || next.IsZero() {
		t.Errorf("unforced attempt of a deferred message: %v %q", next, outcome)
	}
	up.err = nil
	up.replies = map[string]upstream.Status{"b@x": upstream.Delivered, "c@x": upstream.Delivered}
	got, err := r.Flush(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Outcome != "delivered" || got[1].Outcome != "delivered" {
		t.Errorf("Flush = %+v", got)
	}
	if got[0].ID != a.ID || got[1].ID != b.ID {
		t.Errorf("Flush order %+v, want oldest first", got)
	}
	got, _ = r.Flush(context.Background(), []string{a.ID})
	if got[0].Outcome != "not in the queue" {
		t.Errorf("Flush of a delivered message: %+v", got)
	}
}

// routedUpstream is a Router that answers through a fixed upstream name.
type routedUpstream struct {
	fakeUpstream
	name string
}

func (r *routedUpstream) Route(ctx context.Context, m *upstream.Message) (relay.Via, []upstream.Result, error) {
	res, err := r.Deliver(ctx, m)
	return relay.Via{Name: r.name, Host: r.name + ".test"}, res, err
}

// Every delivered, deferred and failed line names the upstream a Router
// used, not the runner's default relay name.
func TestLogsNameRouterRelay(t *testing.T) {
	up := &routedUpstream{name: "backup", fakeUpstream: fakeUpstream{replies: map[string]upstream.Status{
		"b@x": upstream.Delivered, "c@x": upstream.Deferred, "d@x": upstream.Failed}}}
	var log testutil.SyncBuffer
	sp, err := spool.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := New(sp, up, Policy{RetryMin: time.Minute, RetryMax: time.Hour, Lifetime: time.Hour},
		Options{Relay: "primary"}, slog.New(slog.NewTextHandler(&log, nil)))
	env := queue(t, sp, "b@x", "c@x", "d@x")
	r.attempt(context.Background(), env.ID, true)
	for _, what := range []string{"delivered", "deferred", "failed"} {
		found := false
		for l := range strings.SplitSeq(log.String(), "\n") {
			if strings.Contains(l, "msg="+what) {
				found = true
				if !strings.Contains(l, "relay=backup") {
					t.Errorf("%s line without relay=backup: %s", what, l)
				}
			}
		}
		if !found {
			t.Errorf("no %s line in:\n%s", what, log.String())
		}
	}
}
