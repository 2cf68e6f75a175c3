package runner

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/outboxmta/outbox/bounce"
	"github.com/outboxmta/outbox/internal/address"
	"github.com/outboxmta/outbox/internal/testutil"
	"github.com/outboxmta/outbox/spool"
	"github.com/outboxmta/outbox/upstream"
)

// bounceRunner is a runner that bounces, with its log.
func bounceRunner(t *testing.T, up Deliverer) (*Runner, *spool.Spool, *testutil.SyncBuffer) {
	t.Helper()
	sp, err := spool.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var log testutil.SyncBuffer
	b := &bounce.Options{Hostname: "relay.test", Postmaster: []string{"ops@example.net"},
		LocalDomains: []string{"example.com", "relay.test"}, Aliases: address.NewAliases(nil)}
	r := New(sp, up, Policy{RetryMin: time.Minute, RetryMax: time.Hour, Lifetime: time.Hour, Bounce: b},
		Options{}, slog.New(slog.NewTextHandler(&log, nil)))
	return r, sp, &log
}

func queueFrom(t *testing.T, sp *spool.Spool, from string, rcpts ...spool.Recipient) *spool.Envelope {
	t.Helper()
	env := &spool.Envelope{From: from, Recipients: rcpts}
	if err := sp.Put(spool.Queue, env, strings.NewReader("Subject: t\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	return env
}

// bounces returns the envelopes of the bounces in the queue.
func bounces(t *testing.T, sp *spool.Spool) []*spool.Envelope {
	t.Helper()
	var out []*spool.Envelope
	err := sp.Scan(spool.Queue, func(env *spool.Envelope) error {
		if env.Origin.Kind == "bounce" {
			out = append(out, env)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func pending(addr string) spool.Recipient { return spool.Recipient{Addr: addr, Status: spool.Pending} }

func TestBounce(t *testing.T) {
	refused := map[string]upstream.Status{"ok@x": upstream.Delivered, "bad@x": upstream.Failed, "never@x": upstream.Failed}
	never := pending("never@x")
	never.DSNNotify = "NEVER"
	tests := []struct {
		name   string
		from   string
		rcpts  []spool.Recipient
		wantTo string // "" when no bounce is wanted
		log    string
	}{
		{"remote sender", "app@example.org", []spool.Recipient{pending("ok@x"), pending("bad@x")}, "app@example.org", "msg=bounced"},
		{"local sender: postmaster", "www-data@relay.test", []spool.Recipient{pending("bad@x")}, "ops@example.net", "msg=bounced"},
		{"null sender: never bounced", "", []spool.Recipient{pending("bad@x")}, "", "not bounced: null sender"},
		{"NOTIFY=NEVER", "app@example.org", []spool.Recipient{pending("ok@x"), never}, "", "not bounced: no failed recipient asked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, sp, log := bounceRunner(t, &fakeUpstream{replies: refused})
			env := queueFrom(t, sp, tt.from, tt.rcpts...)
			if _, outcome := r.attempt(context.Background(), env.ID, true); !strings.Contains(outcome, "moved to failed/") {
				t.Errorf("outcome %q", outcome)
			}
			read(t, sp, spool.FailedQ, env.ID) // the original stays for the administrator
			bs := bounces(t, sp)
			if tt.wantTo == "" {
				if len(bs) != 0 {
					t.Errorf("%d bounce(s) queued", len(bs))
				}
			} else if len(bs) != 1 || bs[0].From != "" || len(bs[0].Recipients) != 1 || bs[0].Recipients[0].Addr != tt.wantTo {
				t.Fatalf("bounces %+v, want one from <> to %s", bs, tt.wantTo)
			}
			if !strings.Contains(log.String(), tt.log) {
				t.Errorf("log lacks %q:\n%s", tt.log, log)
			}
			if tt.wantTo != "" {
				line := log.String()[strings.Index(log.String(), "msg=bounced"):]
				for _, want := range []string{"id=" + env.ID, "bounce=" + bs[0].ID, "from=" + tt.from} {
					if !strings.Contains(line, want) {
						t.Errorf("bounced line lacks %s: %s", want, line)
					}
				}
			}
		})
	}
}

// An expired message is bounced like a refused one, with status 4.4.7.
func TestBounceExpired(t *testing.T) {
	r, sp, _ := bounceRunner(t, &fakeUpstream{err: &upstream.Error{Op: "connect", Text: "refused", Temporary: true}})
	env := queueFrom(t, sp, "app@example.org", pending("b@x"))
	r.attempt(context.Background(), env.ID, true)
	r.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	r.attempt(context.Background(), env.ID, true)
	got := read(t, sp, spool.FailedQ, env.ID)
	if rc := got.Recipients[0]; rc.Status != spool.Failed || rc.DSNStatus != "4.4.7" || !strings.Contains(rc.Reply, "refused") {
		t.Errorf("expired recipient %+v", rc)
	}
	bs := bounces(t, sp)
	if len(bs) != 1 {
		t.Fatalf("%d bounces, want 1", len(bs))
	}
	_, body, err := sp.Read(spool.Queue, bs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), "Status: 4.4.7") || !strings.Contains(string(body), "Action: failed") {
		t.Errorf("bounce of an expired message:\n%s", body)
	}
}

// A bounce that cannot be queued leaves the message in the queue with its
// outcome recorded; the next attempt queues the bounce without delivering
// again.
func TestBounceRetried(t *testing.T) {
	up := &fakeUpstream{replies: map[string]upstream.Status{"bad@x": upstream.Failed}}
	r, sp, _ := bounceRunner(t, up)
	env := queueFrom(t, sp, "app@example.org", pending("bad@x"))
	sp.SetMinFree(1 << 62) // every Create fails: no space
	if next, outcome := r.attempt(context.Background(), env.ID, true); next.IsZero() || !strings.Contains(outcome, "bounce not queued") {
		t.Fatalf("attempt: %v %q", next, outcome)
	}
	if got := read(t, sp, spool.Queue, env.ID); got.Recipients[0].Status != spool.Failed {
		t.Errorf("outcome not recorded: %+v", got.Recipients[0])
	}
	sp.SetMinFree(0)
	r.attempt(context.Background(), env.ID, true)
	read(t, sp, spool.FailedQ, env.ID)
	if n := len(bounces(t, sp)); n != 1 || len(up.calls) != 1 {
		t.Errorf("%d bounces after %d deliveries, want 1 after 1", n, len(up.calls))
	}
}
