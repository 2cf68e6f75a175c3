package metrics

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/outboxmta/outbox/internal/testutil"
	"github.com/outboxmta/outbox/spool"
)

// get fetches path from h and returns the status and body.
func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	return testutil.Get(t, srv.URL+path)
}

func TestCounters(t *testing.T) {
	sp, err := spool.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := New(sp, []string{"smtp.example.com:587"})
	m.Accepted("smtp")
	m.Accepted("smtp")
	m.Accepted("maildrop")
	m.Attempted("smtp.example.com:587", 30*time.Millisecond, 2, 1, 1)
	m.Attempted("smtp.example.com:587", 3*time.Second, 0, 3, 0)
	m.Expired(2)
	m.Bounced()

	code, body := get(t, m.Handler(func() bool { return true }), "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	testutil.CheckSamples(t, body, map[string]float64{
		`outbox_messages_accepted_total{origin="smtp"}`:                                     2,
		`outbox_messages_accepted_total{origin="maildrop"}`:                                 1,
		`outbox_messages_accepted_total{origin="sendmail"}`:                                 0,
		`outbox_deliveries_total{status="delivered",upstream="smtp.example.com:587"}`:       2,
		`outbox_deliveries_total{status="deferred",upstream="smtp.example.com:587"}`:        4,
		`outbox_deliveries_total{status="failed",upstream="smtp.example.com:587"}`:          1,
		`outbox_expired_recipients_total`:                                                   2,
		`outbox_bounces_total`:                                                              1,
		`outbox_upstream_latency_seconds_count{upstream="smtp.example.com:587"}`:            2,
		`outbox_upstream_latency_seconds_bucket{upstream="smtp.example.com:587",le="0.05"}`: 1,
		`outbox_upstream_latency_seconds_bucket{upstream="smtp.example.com:587",le="5"}`:    2,
		`outbox_queue_messages{state="queue"}`:                                              0,
		`outbox_queue_oldest_message_age_seconds`:                                           0,
		`outbox_queue_scrape_errors`:                                                        0,
	})
}

func TestQueueGauges(t *testing.T) {
	sp, err := spool.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	put := func(st spool.State) string {
		env := &spool.Envelope{From: "a@example.com", Recipients: []spool.Recipient{{Addr: "b@example.net", Status: spool.Pending}}}
		if err := sp.Put(st, env, strings.NewReader("Subject: x\r\n\r\nbody\r\n")); err != nil {
			t.Fatal(err)
		}
		return env.ID
	}
	first := put(spool.Queue)
	put(spool.Queue)
	put(spool.Hold)
	put(spool.FailedQ)
	m := New(sp, nil)
	c := m.queue
	arrived, _ := spool.IDTime(first)
	c.now = func() time.Time { return arrived.Add(90 * time.Second) }

	_, body := get(t, m.Handler(func() bool { return true }), "/metrics")
	testutil.CheckSamples(t, body, map[string]float64{
		`outbox_queue_messages{state="queue"}`:    2,
		`outbox_queue_messages{state="hold"}`:     1,
		`outbox_queue_messages{state="failed"}`:   1,
		`outbox_queue_messages{state="incoming"}`: 0,
		`outbox_queue_oldest_message_age_seconds`: 90,
	})
}

func TestHealthz(t *testing.T) {
	sp, err := spool.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := New(sp, nil)
	for _, tt := range []struct {
		alive bool
		code  int
		body  string
	}{
		{true, 200, "ok\n"},
		{false, 503, "unhealthy: queue runner not responding\n"},
	} {
		code, body := get(t, m.Handler(func() bool { return tt.alive }), "/healthz")
		if code != tt.code || body != tt.body {
			t.Errorf("alive %v: %d %q, want %d %q", tt.alive, code, body, tt.code, tt.body)
		}
	}
}
