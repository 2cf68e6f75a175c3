package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// outbox runs the real binary with args and the world's config.
func (w *world) outbox(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "outbox"), append(args, "--config", w.config)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (w *world) state(t *testing.T, id string) string {
	t.Helper()
	for _, q := range w.queue(t) {
		if q.ID == id {
			return q.State
		}
	}
	return ""
}

// The queue commands, run in the foreground with no daemon: hold, delete,
// flush, release and requeue from failed/.
func TestQueueCommands(t *testing.T) {
	w := newWorld(t)
	w.startServe(t)
	ids := map[string]string{}
	for _, name := range []string{"held", "refused", "deleted"} {
		to := name + "@example.net"
		if name == "refused" {
			to = "nobody@example.net"
		}
		reply := w.smtpSend(t, "app@example.com", []string{to}, "Subject: q\r\nX-Marker: "+name+"\r\n\r\nbody\r\n")
		ids[name] = reply[strings.LastIndex(reply, " ")+1:]
	}
	waitFor(t, "three failed attempts", func() bool {
		q := w.queue(t)
		return len(q) == 3 && q[0].Attempts > 0 && q[1].Attempts > 0 && q[2].Attempts > 0
	})
	w.serve.stop(t, syscall.SIGTERM)

	if out, err := w.outbox(t, "queue", "hold", ids["held"]); err != nil || !strings.Contains(out, "held") {
		t.Fatalf("hold: %v %s", err, out)
	}
	if st := w.state(t, ids["held"]); st != "hold" {
		t.Errorf("held message is in %q", st)
	}
	mq, _ := w.outbox(t, "queue", "list")
	if !strings.Contains(mq, ids["held"]+"!") {
		t.Errorf("mailq does not mark the held message:\n%s", mq)
	}
	if out, err := w.outbox(t, "queue", "delete", ids["deleted"]); err != nil {
		t.Fatalf("delete: %v %s", err, out)
	}
	if st := w.state(t, ids["deleted"]); st != "" {
		t.Errorf("deleted message is still listed in %q", st)
	}
	if out, err := w.outbox(t, "queue", "delete", ids["deleted"]); err == nil || !strings.Contains(out, "no such message") {
		t.Errorf("second delete: %v %s", err, out)
	}

	// The upstream refuses one recipient: flush moves that message to
	// failed/ and leaves the held one alone.
	w.sink = start(t, "smtpsink", "-listen", w.sinkAddr, "-dir", w.sinkDir, "-reject", "nobody@example.net")
	waitFor(t, "the sink", func() bool { return listening(w.sinkAddr) })
	out, err := w.outbox(t, "queue", "flush")
	if err != nil || !strings.Contains(out, ids["refused"]+": failed") {
		t.Fatalf("flush: %v\n%s", err, out)
	}
	if strings.Contains(out, ids["held"]) {
		t.Errorf("flush touched the held message:\n%s", out)
	}

	if out, _ := w.outbox(t, "queue", "list", "--failed"); !strings.Contains(out, ids["refused"]) || !strings.Contains(out, "550 5.1.1") {
		t.Errorf("list --failed does not show the refusal:\n%s", out)
	}
	if out, err := w.outbox(t, "queue", "release", ids["held"]); err != nil {
		t.Fatalf("release: %v %s", err, out)
	}
	if out, err := w.outbox(t, "queue", "flush", ids["held"]); err != nil || !strings.Contains(out, ids["held"]+": delivered") {
		t.Fatalf("flush ID: %v\n%s", err, out)
	}

	// The refusal was fixed upstream: requeue from failed/ and deliver.
	w.stopSink(t)
	w.startSink(t)
	if out, err := w.outbox(t, "queue", "requeue", ids["refused"]); err != nil {
		t.Fatalf("requeue: %v %s", err, out)
	}
	if st := w.state(t, ids["refused"]); st != "queue" {
		t.Errorf("requeued message is in %q", st)
	}
	// sendmail -q is the same flush.
	cmd := exec.Command(filepath.Join(bin, "sendmail"), "-q")
	cmd.Env = append(os.Environ(), "OUTBOX_CONFIG="+w.config)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), ids["refused"]+": delivered") {
		t.Fatalf("sendmail -q: %v\n%s", err, out)
	}
	for name, want := range map[string]int{"held": 1, "refused": 1, "deleted": 0} {
		if n := w.countSent(t, "X-Marker: "+name+"\r\n"); n != want {
			t.Errorf("%s delivered %d times, want %d", name, n, want)
		}
	}
	// The first flush bounced the refusal to root's alias; sendmail -q
	// delivered that bounce.
	if n := w.count(t, "X-Marker: refused\r\n") - w.countSent(t, "X-Marker: refused\r\n"); n != 1 {
		t.Errorf("%d bounces for the refused message, want 1", n)
	}
	if q := w.queue(t); len(q) != 0 {
		t.Errorf("queue not empty: %+v", q)
	}
}
