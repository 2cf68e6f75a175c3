package main

// The daemon's log tells each message's story: one line per event, every
// one carrying the queue ID, so that grepping the log for an ID shows what
// happened to the message, in order.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// event is one log line: its message and its key=value attributes.
type event struct {
	msg   string
	attrs map[string]string
}

// story returns the events of the log lines that mention id, in order.
func story(log, id string) []event {
	var out []event
	for line := range strings.SplitSeq(log, "\n") {
		if !strings.Contains(line, id) {
			continue
		}
		attrs := parseLogfmt(line)
		out = append(out, event{attrs["msg"], attrs})
		if attrs["id"] != id {
			out[len(out)-1].msg += " (without id=" + id + ")"
		}
	}
	return out
}

// parseLogfmt reads slog's text format: key=value, the value quoted in Go
// syntax when it has spaces or quotes.
func parseLogfmt(line string) map[string]string {
	attrs := map[string]string{}
	for line != "" {
		line = strings.TrimLeft(line, " ")
		key, rest, ok := strings.Cut(line, "=")
		if !ok {
			break
		}
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				break
			}
			val, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			val, rest, _ = strings.Cut(rest, " ")
		}
		attrs[key] = val
		line = rest
	}
	return attrs
}

// checkStory matches the events' messages, joined by "|", against the
// regular expression want, and checks that each event named in keys has
// those attributes (with the value given, or any when it is "").
func checkStory(t *testing.T, what string, events []event, want string, keys map[string]map[string]string) {
	t.Helper()
	msgs := make([]string, len(events))
	for i, e := range events {
		msgs[i] = e.msg
	}
	if got := strings.Join(msgs, "|"); !regexp.MustCompile("^(?:" + want + ")$").MatchString(got) {
		t.Errorf("%s: story %q, want %q", what, got, want)
	}
	for _, e := range events {
		for k, v := range keys[e.msg] {
			got, ok := e.attrs[k]
			if !ok || v != "" && got != v {
				t.Errorf("%s: %q event has %s=%q (present %v), want %q", what, e.msg, k, got, ok, v)
			}
		}
	}
}

// queuedID returns the queue ID from a "250 2.0.0 Ok: queued as ID" reply.
func queuedID(t *testing.T, reply string) string {
	t.Helper()
	_, id, ok := strings.Cut(reply, "queued as ")
	if !ok || len(id) != 16 {
		t.Fatalf("reply %q does not name a queue ID", reply)
	}
	return id
}

// serveWithEnv starts outbox serve from path, with env added to the
// environment, and waits for it to listen.
func (w *world) serveWithEnv(t *testing.T, path string, env ...string) *daemonProc {
	t.Helper()
	p := startDaemon(t, path, env, "serve", "--config", w.config)
	waitFor(t, "outbox serve to listen", func() bool { return listening(w.listen) })
	return p
}

func TestLogStory(t *testing.T) {
	w := newWorld(t)
	d := w.serveWithEnv(t, filepath.Join(bin, "outbox")) // the upstream is down

	// Deferred while the upstream is down, delivered once it is up.
	later := queuedID(t, w.smtpSend(t, "app@example.com", []string{"x@example.net"}, "Subject: later\r\n\r\nbody\r\n"))
	d.logged(t, "next attempt", later)
	w.sink = start(t, "smtpsink", "-listen", w.sinkAddr, "-dir", w.sinkDir, "-reject", "bad@example.net")
	waitFor(t, "the sink to listen", func() bool { return listening(w.sinkAddr) })
	d.logged(t, "msg=removed", later)

	// One recipient delivered, one refused: the message ends in failed/.
	mixed := queuedID(t, w.smtpSend(t, "app@example.com", []string{"good@example.net", "bad@example.net"}, "Subject: mixed\r\n\r\nbody\r\n"))
	d.logged(t, "moved to failed", mixed)

	// Through the sendmail command: the submitter's uid is named.
	if out, err := w.sendmail(t, "Subject: local\n\nbody\n", "y@example.net"); err != nil {
		t.Fatalf("sendmail: %v\n%s", err, out)
	}
	local := regexp.MustCompile(`msg=queued id=(\w{16}) .*origin=sendmail`).FindStringSubmatch(d.logged(t, "msg=queued", "origin=sendmail"))
	if local == nil {
		t.Fatal("no queued line for the sendmail message")
	}
	d.logged(t, "msg=removed", local[1])

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	d.wait(t)
	log := d.out.String()

	queued := map[string]string{"from": "app@example.com", "size": "", "nrcpt": "", "client": "", "origin": "smtp"}
	relay := sinkHost(w)
	checkStory(t, "deferred message", story(log, later), `queued(\|deferred\|next attempt)+\|delivered\|removed`,
		map[string]map[string]string{
			"queued":       queued,
			"deferred":     {"relay": relay, "reason": "", "attempts": ""},
			"next attempt": {"at": "", "pending": "1"},
			"delivered":    {"to": "x@example.net", "relay": relay, "delay": "", "reply": ""},
		})
	if e := story(log, later)[0]; e.attrs["uid"] != "" || strings.Contains(log, "<nil>") {
		t.Errorf("queued over TCP names a uid: %v", e.attrs)
	}
	checkStory(t, "partly refused message", story(log, mixed), `queued\|delivered\|failed\|bounced\|moved to failed`,
		map[string]map[string]string{
			"queued":          {"nrcpt": "2"},
			"delivered":       {"to": "good@example.net"},
			"failed":          {"to": "bad@example.net", "relay": relay, "reply": "550 5.1.1 no such user"},
			"bounced":         {"from": "app@example.com", "to": "admin@example.net", "bounce": ""},
			"moved to failed": {"failed": "1"},
		})
	checkStory(t, "sendmail message", story(log, local[1]), `queued\|delivered\|removed`,
		map[string]map[string]string{
			"queued": {"origin": "sendmail", "uid": strconv.Itoa(os.Getuid()), "from": ""},
		})
}

// A message that outlives the queue lifetime: its recipients expire, the
// sender (local: the postmaster, root's alias) gets a bounce, and the
// story ends in failed/.
func TestLogStoryExpired(t *testing.T) {
	w := newWorld(t)
	w.edit(t, `retry_max = "2s"`, `retry_max = "2s"`+"\nlifetime = \"2s\"")
	d := w.serveWithEnv(t, filepath.Join(bin, "outbox")) // the upstream stays down
	id := queuedID(t, w.smtpSend(t, "app@example.com", []string{"x@example.net"}, "Subject: never\r\n\r\nbody\r\n"))
	d.logged(t, `msg="moved to failed"`, id)
	checkStory(t, "expired message", story(d.out.String(), id), `queued(\|deferred\|next attempt)+\|expired\|bounced\|moved to failed`,
		map[string]map[string]string{"expired": {"to": "x@example.net", "reason": ""}, "bounced": {"to": "admin@example.net"}})
}

// Under systemd (stderr is the journal stream named by $JOURNAL_STREAM) the
// daemon writes native journal entries. go-systemd sends them to a fixed
// socket path, a link-time variable: this test builds a binary that sends
// to its own stand-in for journald and reads the datagrams it gets.
func TestJournalNative(t *testing.T) {
	dir := t.TempDir()
	sock, exe := filepath.Join(dir, "journal.sock"), filepath.Join(dir, "outbox")
	build := exec.Command("go", "build", "-o", exe,
		"-ldflags", "-X github.com/coreos/go-systemd/v22/journal.journalSocket="+sock, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	entries := make(chan map[string]string, 100)
	go func() {
		buf := make([]byte, 1<<16)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(entries)
				return
			}
			e, err := parseJournalEntry(buf[:n])
			if err != nil {
				e = map[string]string{"PARSE_ERROR": err.Error()}
			}
			entries <- e
		}
	}()

	w := newWorld(t)
	w.startSink(t)
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(stderr.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	serve := dieWithTest(exec.Command(exe, "serve", "--config", w.config))
	serve.Env = append(os.Environ(), fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
	serve.Stderr = stderr
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		serve.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { serve.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			serve.Process.Kill()
			<-done
			t.Error("outbox serve did not stop on SIGTERM")
		}
	}()
	waitFor(t, "outbox serve to listen", func() bool { return listening(w.listen) })
	id := queuedID(t, w.smtpSend(t, "app@example.com", []string{"x@example.net"}, "Subject: journal\r\n\r\nbody\r\n"))

	want := []map[string]string{
		{"MESSAGE": "queued id=" + id + " from=app@example.com", "PRIORITY": "6", "OUTBOX_FROM": "app@example.com", "OUTBOX_ORIGIN": "smtp", "OUTBOX_NRCPT": "1"},
		{"MESSAGE": "delivered id=" + id + " to=x@example.net", "PRIORITY": "6", "OUTBOX_TO": "x@example.net", "OUTBOX_RELAY": sinkHost(w)},
		{"MESSAGE": "removed id=" + id, "PRIORITY": "6"},
	}
	for _, fields := range want {
		e := awaitEntry(t, entries, id, fields["MESSAGE"])
		if e["SYSLOG_IDENTIFIER"] != "outbox" {
			t.Errorf("%q: SYSLOG_IDENTIFIER=%q", e["MESSAGE"], e["SYSLOG_IDENTIFIER"])
		}
		for k, v := range fields {
			if k != "MESSAGE" && e[k] != v {
				t.Errorf("%q: %s=%q, want %q", e["MESSAGE"], k, e[k], v)
			}
		}
	}
	if b, _ := os.ReadFile(stderr.Name()); bytes.Contains(b, []byte(id)) {
		t.Errorf("events went to stderr too:\n%s", b)
	}
}

// awaitEntry skips journal entries until one for queue ID id whose MESSAGE
// starts with prefix.
func awaitEntry(t *testing.T, entries <-chan map[string]string, id, prefix string) map[string]string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case e, ok := <-entries:
			if !ok {
				t.Fatal("journal socket closed")
			}
			if e["PARSE_ERROR"] != "" {
				t.Fatalf("datagram: %s", e["PARSE_ERROR"])
			}
			if e["OUTBOX_ID"] == id && strings.HasPrefix(e["MESSAGE"], prefix) {
				return e
			}
		case <-timeout:
			t.Fatalf("no journal entry %q for %s", prefix, id)
		}
	}
}

// parseJournalEntry reads journald's native protocol: KEY=value lines, or
// KEY, a newline, a 64-bit little-endian length, the value and a newline
// for values with newlines in them.
func parseJournalEntry(b []byte) (map[string]string, error) {
	e := map[string]string{}
	for len(b) > 0 {
		line, rest, ok := bytes.Cut(b, []byte("\n"))
		if !ok {
			return nil, fmt.Errorf("unterminated field %q", b)
		}
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			e[string(k)], b = string(v), rest
			continue
		}
		if len(rest) < 8 {
			return nil, fmt.Errorf("field %s: short length", line)
		}
		n := binary.LittleEndian.Uint64(rest)
		rest = rest[8:]
		if uint64(len(rest)) < n+1 || rest[n] != '\n' {
			return nil, fmt.Errorf("field %s: bad length %d", line, n)
		}
		e[string(line)], b = string(rest[:n]), rest[n+1:]
	}
	return e, nil
}

// sinkHost is the default [[upstream]] name of the world's sink: its host.
func sinkHost(w *world) string {
	h, _, _ := net.SplitHostPort(w.sinkAddr)
	return h
}
