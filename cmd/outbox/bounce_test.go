package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A recipient the upstream refuses gets its sender a bounce, through the
// same upstream, exactly once; the original stays in failed/.
func TestBounceEndToEnd(t *testing.T) {
	w := newWorld(t)
	w.sink = start(t, "smtpsink", "-listen", w.sinkAddr, "-dir", w.sinkDir, "-reject", "gone@example.net")
	waitFor(t, "the sink to listen", func() bool { return listening(w.sinkAddr) })
	w.startServe(t)

	id := queuedID(t, w.smtpSend(t, "app@example.org", []string{"ok@example.net", "gone@example.net"},
		"Subject: invoice\r\nMessage-ID: <inv.7@example.org>\r\nX-Marker: bounce-me\r\n\r\nbody\r\n"))
	isBounce := func(m string) bool {
		return strings.HasPrefix(m, "X-Sink-Mail-From: <>\r\n") && strings.Contains(m, "Content-Type: multipart/report")
	}
	bounces := func() []string {
		var out []string
		for _, m := range w.delivered(t) {
			if isBounce(m) {
				out = append(out, m)
			}
		}
		return out
	}
	waitFor(t, "the bounce at the upstream", func() bool { return len(bounces()) > 0 })
	// The queue empties only after the bounce was delivered and removed:
	// nothing is left that could send a second one.
	waitFor(t, "an empty queue", func() bool { return len(w.queue(t)) == 0 })
	time.Sleep(200 * time.Millisecond)

	got := bounces()
	if len(got) != 1 {
		t.Fatalf("%d bounces at the upstream, want exactly 1", len(got))
	}
	b := got[0]
	for _, want := range []string{
		"X-Sink-Rcpt-To: <app@example.org>\r\n",
		"From: Mail Delivery System <MAILER-DAEMON@relay.test>\r\n",
		"Auto-Submitted: auto-replied\r\n",
		"In-Reply-To: <inv.7@example.org>\r\n",
		"Final-Recipient: rfc822; gone@example.net\r\n",
		"Status: 5.1.1\r\n",
		"Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n",
		"X-Outbox-Queue-ID: " + id + "\r\n",
		"X-Marker: bounce-me",
	} {
		if !strings.Contains(b, want) {
			t.Errorf("bounce lacks %q:\n%s", want, b)
		}
	}
	if strings.Contains(b, "ok@example.net") {
		t.Errorf("bounce names the delivered recipient:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(w.dir, "spool", "failed", id)); err != nil {
		t.Errorf("original not in failed/: %v", err)
	}
	if n := w.count(t, "X-Marker: bounce-me"); n != 2 { // the delivered copy and the bounce
		t.Errorf("%d messages carry the marker, want 2 (the delivery and the bounce)", n)
	}
}

// countSent is count without the bounces (null sender) at the sink.
func (w *world) countSent(t *testing.T, marker string) int {
	n := 0
	for _, m := range w.delivered(t) {
		if strings.Contains(m, marker) && !strings.HasPrefix(m, "X-Sink-Mail-From: <>\r\n") {
			n++
		}
	}
	return n
}
