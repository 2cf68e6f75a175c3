package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/outboxmta/outbox/internal/testutil"
)

// Mail through a real daemon, then a scrape of its [metrics] listener,
// as Prometheus would.
func TestMetricsScrape(t *testing.T) {
	w := newWorld(t)
	addr := freeAddr(t)
	f, err := os.OpenFile(w.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("\n[metrics]\naddress = \"" + addr + "\"\n")
	f.Close()
	w.sink = start(t, "smtpsink", "-listen", w.sinkAddr, "-dir", w.sinkDir, "-reject", "bad@example.net")
	waitFor(t, "the sink to listen", func() bool { return listening(w.sinkAddr) })
	d := w.serveWithEnv(t, filepath.Join(bin, "outbox"))

	code, body := testutil.Get(t, "http://"+addr+"/healthz")
	if code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}

	w.smtpSend(t, "app@example.com", []string{"a@example.net", "b@example.net"}, "Subject: one\r\n\r\nbody\r\n")
	mixed := queuedID(t, w.smtpSend(t, "app@example.com", []string{"c@example.net", "bad@example.net"}, "Subject: two\r\n\r\nbody\r\n"))
	if out, err := w.sendmail(t, "Subject: three\n\nbody\n", "d@example.net"); err != nil {
		t.Fatalf("sendmail: %v\n%s", err, out)
	}
	d.logged(t, "moved to failed", mixed)
	waitFor(t, "the queue to empty", func() bool { return len(w.queue(t)) == 0 })

	_, m := testutil.Get(t, "http://"+addr+"/metrics")
	relay := `upstream="` + sinkHost(w) + `"` // the [[upstream]] name: its host by default
	testutil.CheckSamples(t, m, map[string]float64{
		`outbox_messages_accepted_total{origin="smtp"}`:             2,
		`outbox_messages_accepted_total{origin="sendmail"}`:         1,
		`outbox_deliveries_total{status="delivered",` + relay + `}`: 5, // with the bounce

		`outbox_deliveries_total{status="failed",` + relay + `}`:   1,
		`outbox_deliveries_total{status="deferred",` + relay + `}`: 0,
		`outbox_upstream_latency_seconds_count{` + relay + `}`:     4,
		`outbox_bounces_total`:                    1,
		`outbox_queue_messages{state="queue"}`:    0,
		`outbox_queue_messages{state="failed"}`:   1,
		`outbox_queue_oldest_message_age_seconds`: 0,
	})
}
