package main

// The sendmail command as a drop-in: -bs, the fallback to the drop when
// the daemon hangs up, masquerading, and the check list of sendmail(1)
// behaviours, each with the real binary.

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/outboxmta/outbox/config"
)

// smRun runs the binary as sendmail and returns its standard output and
// error apart (-bs speaks SMTP on standard output) and its exit status.
func (w *world) smRun(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "sendmail"), args...)
	cmd.Env = append(os.Environ(), "OUTBOX_CONFIG="+w.config)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// smConfig adds top-level keys and tables to the world's configuration.
func (w *world) smConfig(t *testing.T, top, tables string) {
	t.Helper()
	b, err := os.ReadFile(w.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.config, []byte(top+string(b)+tables), 0o644); err != nil {
		t.Fatal(err)
	}
}

// smMakeSpool lets the daemon create the spool, then stops it.
func (w *world) smMakeSpool(t *testing.T) {
	t.Helper()
	w.startServe(t)
	if err := w.serve.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("outbox serve: %v", err)
	}
}

// smMessage returns the one delivered message containing marker.
func (w *world) smMessage(t *testing.T, marker string) string {
	t.Helper()
	waitFor(t, marker+" at the upstream", func() bool { return w.count(t, marker) >= 1 })
	var found []string
	for _, m := range w.delivered(t) {
		if strings.Contains(m, marker) {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s delivered %d times", marker, len(found))
	}
	return found[0]
}

// bsCodes returns the codes of the SMTP replies in out, one per reply
// (the last line of a multi-line reply).
func bsCodes(t *testing.T, out string) []int {
	t.Helper()
	var codes []int
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if len(line) < 4 || line[3] != ' ' {
			continue
		}
		n, err := strconv.Atoi(line[:3])
		if err != nil {
			t.Fatalf("not an SMTP reply: %q in\n%s", line, out)
		}
		codes = append(codes, n)
	}
	return codes
}

func equalInts(a, b []int) bool {
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

// bsDialogue is the client's side of a -bs session with one transaction
// per message, pipelined as a program writing to a pipe would.
func bsDialogue(msgs ...string) string {
	var b strings.Builder
	b.WriteString("EHLO app.test\r\n")
	for _, m := range msgs {
		b.WriteString("MAIL FROM:<app@example.com>\r\nRCPT TO:<bob@example.net>\r\nRCPT TO:<root@example.com>\r\nDATA\r\n")
		b.WriteString(m + ".\r\n")
	}
	b.WriteString("QUIT\r\n")
	return b.String()
}

func TestSendmailBS(t *testing.T) {
	w := newWorld(t)
	w.startSink(t)
	w.startServe(t)

	in := bsDialogue(
		"Subject: first\r\nX-Marker: bs-one\r\n\r\nhello\r\n..a stuffed dot line\r\n",
		"Subject: second\r\nX-Marker: bs-two\r\n\r\nagain\r\n",
	)
	out, stderr, code := w.smRun(t, in, "-bs")
	if code != 0 {
		t.Fatalf("sendmail -bs exit %d\n%s%s", code, out, stderr)
	}
	want := []int{220, 250, 250, 250, 250, 354, 250, 250, 250, 250, 354, 250, 221}
	if got := bsCodes(t, out); !equalInts(got, want) {
		t.Fatalf("replies %v, want %v:\n%s", got, want, out)
	}
	if !strings.HasPrefix(out, "220 relay.test ") {
		t.Errorf("greeting does not name the host: %q", out)
	}

	for _, marker := range []string{"X-Marker: bs-one", "X-Marker: bs-two"} {
		m := w.smMessage(t, marker)
		for _, want := range []string{"X-Sink-Mail-From: <app@example.com>", "X-Sink-Rcpt-To: <bob@example.net>",
			"X-Sink-Rcpt-To: <admin@example.net>", // root, through the alias
			"Received: by relay.test (Outbox, from userid", "From: app@example.com\r\n", "Date: ", "Message-ID: <"} {
			if !strings.Contains(m, want) {
				t.Errorf("%s lacks %q:\n%s", marker, want, m)
			}
		}
	}
	if m := w.smMessage(t, "X-Marker: bs-one"); !strings.Contains(m, "\r\nhello\r\n.a stuffed dot line\r\n") {
		t.Errorf("dot-stuffing not undone:\n%s", m)
	}
}

// -bs with the daemon down: the messages are dropped (250) and delivered
// once the daemon runs; with nowhere to queue them the reply is 451.
func TestSendmailBSDrop(t *testing.T) {
	w := newWorld(t) // no spool yet, no daemon
	in := bsDialogue("Subject: nowhere\r\nX-Marker: bs-nowhere\r\n\r\nx\r\n")
	out, stderr, code := w.smRun(t, in, "-bs")
	if code != 0 {
		t.Fatalf("sendmail -bs exit %d\n%s%s", code, out, stderr)
	}
	if got, want := bsCodes(t, out), []int{220, 250, 250, 250, 250, 354, 451, 221}; !equalInts(got, want) {
		t.Fatalf("replies %v, want %v:\n%s", got, want, out)
	}
	if !regexp.MustCompile(`(?m)^451 4\.3\.0 cannot queue the message: .*outbox serve`).MatchString(out) {
		t.Errorf("451 does not give the reason:\n%s", out)
	}

	w.smMakeSpool(t)
	out, stderr, code = w.smRun(t, bsDialogue(
		"Subject: dropped\r\nX-Marker: bs-drop-1\r\n\r\nx\r\n",
		"Subject: dropped\r\nX-Marker: bs-drop-2\r\n\r\ny\r\n"), "-bs")
	if got, want := bsCodes(t, out), []int{220, 250, 250, 250, 250, 354, 250, 250, 250, 250, 354, 250, 221}; code != 0 || !equalInts(got, want) {
		t.Fatalf("exit %d, replies %v, want %v:\n%s%s", code, got, want, out, stderr)
	}
	if q := w.queue(t); len(q) != 2 || q[0].State != "incoming" {
		t.Fatalf("queue after the drops: %+v", q)
	}
	w.startSink(t)
	w.startServe(t)
	for _, marker := range []string{"X-Marker: bs-drop-1", "X-Marker: bs-drop-2"} {
		m := w.smMessage(t, marker)
		if !strings.Contains(m, "X-Sink-Rcpt-To: <admin@example.net>") || !strings.Contains(m, "X-Sink-Mail-From: <app@example.com>") {
			t.Errorf("%s:\n%s", marker, m)
		}
	}
	if n := w.count(t, "X-Marker: bs-nowhere"); n != 0 {
		t.Errorf("the refused message was delivered %d times", n)
	}
}

// fakeDaemon listens on the world's sendmail socket in place of outbox
// serve and plays script against each client: for each line read, the
// reply to write ("" for none); when the script ends it hangs up.
// greeting is written first ("" for none).
func fakeDaemon(t *testing.T, w *world, greeting string, script func(line string) (reply string, hangUp bool)) {
	t.Helper()
	path := filepath.Join(w.dir, "run", "submit.sock")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Remove(path) // left by a daemon that ran before
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if greeting != "" {
					c.Write([]byte(greeting + "\r\n"))
				}
				if script == nil {
					return
				}
				r := bufio.NewReader(c)
				inData := false
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					line = strings.TrimRight(line, "\r\n")
					if inData && line != "." {
						continue
					}
					inData = false
					reply, hangUp := script(line)
					if reply != "" {
						c.Write([]byte(reply + "\r\n"))
					}
					if hangUp {
						return
					}
					inData = strings.HasPrefix(reply, "354")
				}
			}()
		}
	}()
}

// A daemon that refuses the session with 421 (shutting down, busy) or
// hangs up before it has the message cannot have queued it: sendmail drops
// the message instead. One that hangs up after the final dot without a
// reply may have queued it: sendmail exits 75 and drops nothing.
func TestSendmailDaemonHangsUp(t *testing.T) {
	accept := func(until string) func(string) (string, bool) {
		return func(line string) (string, bool) {
			cmd := strings.ToUpper(strings.SplitN(line, " ", 2)[0])
			if until != "" && strings.HasPrefix(strings.ToUpper(line), until) {
				return "", true
			}
			switch cmd {
			case "EHLO":
				return "250 fake.test", false
			case "DATA":
				return "354 go ahead", false
			case "QUIT":
				return "221 bye", true
			}
			return "250 ok", false
		}
	}
	for _, tt := range []struct {
		name     string
		greeting string
		script   func(string) (string, bool)
		dropped  bool
	}{
		{"421 greeting", "421 4.3.2 fake.test shutting down", nil, true},
		{"no greeting", "", nil, true},
		{"421 to MAIL", "220 fake.test", func(line string) (string, bool) {
			if strings.HasPrefix(line, "MAIL") {
				return "421 4.4.2 fake.test closing", true
			}
			return accept("")(line)
		}, true},
		{"hang-up at RCPT", "220 fake.test", accept("RCPT"), true},
		{"hang-up after the final dot", "220 fake.test", accept("."), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			w.smMakeSpool(t)
			fakeDaemon(t, w, tt.greeting, tt.script)
			out, stderr, code := w.smRun(t, "Subject: hang-up\nX-Marker: hangup\n\nbody\n", "bob@example.net")
			q := w.queue(t)
			if tt.dropped {
				if code != 0 || len(q) != 1 || q[0].State != "incoming" {
					t.Fatalf("exit %d, queue %+v; want 0 and the message dropped into incoming/\n%s%s", code, q, out, stderr)
				}
				return
			}
			if code != 75 || len(q) != 0 {
				t.Fatalf("exit %d, queue %+v; want 75 and nothing dropped\n%s%s", code, q, out, stderr)
			}
			if !strings.Contains(stderr, "may or may not have queued") {
				t.Errorf("message does not say the outcome is unknown: %s", stderr)
			}
		})
	}
}

// The check list of sendmail(1) behaviours, through the daemon.
func TestSendmailDropIn(t *testing.T) {
	w := newWorld(t)
	w.startSink(t)
	w.startServe(t)
	send := func(stdin string, args ...string) string {
		t.Helper()
		out, stderr, code := w.smRun(t, stdin, args...)
		if code != 0 {
			t.Fatalf("sendmail %q: exit %d\n%s%s", args, code, out, stderr)
		}
		return stderr
	}

	t.Run("-t with Bcc", func(t *testing.T) {
		send("To: Bob <bob@example.net>\nBcc: hidden@example.net,\n  also-hidden@example.net\nSubject: bcc\nX-Marker: bcc\n\nbody\n", "-t")
		m := w.smMessage(t, "X-Marker: bcc")
		for _, want := range []string{"X-Sink-Rcpt-To: <bob@example.net>", "X-Sink-Rcpt-To: <hidden@example.net>", "X-Sink-Rcpt-To: <also-hidden@example.net>"} {
			if !strings.Contains(m, want) {
				t.Errorf("lacks %q:\n%s", want, m)
			}
		}
		if strings.Contains(strings.ToLower(m), "\nbcc:") {
			t.Errorf("the Bcc: header reached the upstream:\n%s", m)
		}
	})

	t.Run("a lone dot ends the message", func(t *testing.T) {
		send("Subject: dot\nX-Marker: dot-ends\n\nbefore\n.\nafter the dot\n", "bob@example.net")
		m := w.smMessage(t, "X-Marker: dot-ends")
		if !strings.HasSuffix(m, "\r\n\r\nbefore\r\n") {
			t.Errorf("want the message to end before the dot:\n%q", m)
		}
	})

	t.Run("-i keeps a lone dot", func(t *testing.T) {
		send("Subject: dot\nX-Marker: dot-kept\n\nbefore\n.\nafter the dot\n", "-i", "bob@example.net")
		m := w.smMessage(t, "X-Marker: dot-kept")
		if !strings.HasSuffix(m, "\r\n\r\nbefore\r\n.\r\nafter the dot\r\n") {
			t.Errorf("want the dot line and what follows kept:\n%q", m)
		}
	})

	t.Run("missing headers added", func(t *testing.T) {
		send("Subject: bare\nX-Marker: bare\n\nbody\n", "bob@example.net")
		m := w.smMessage(t, "X-Marker: bare")
		login := loginName(os.Getuid())
		for _, re := range []string{
			`\r\nFrom: ` + regexp.QuoteMeta(login) + `@example\.com\r\n`,
			`\r\nDate: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [-+]\d{4}\r\n`,
			`\r\nMessage-ID: <[^@>]+@relay\.test>\r\n`,
			`\r\nTo: undisclosed-recipients:;\r\n`,
		} {
			if !regexp.MustCompile(re).MatchString(m) {
				t.Errorf("no match for %s:\n%s", re, m)
			}
		}
	})

	t.Run("unknown flag", func(t *testing.T) {
		stderr := send("Subject: flag\nX-Marker: unknown-flag\n\nbody\n", "-y", "bob@example.net")
		if !strings.Contains(stderr, "sendmail: warning: ignoring unknown option -y") {
			t.Errorf("no warning on stderr: %q", stderr)
		}
		w.smMessage(t, "X-Marker: unknown-flag")
	})
}

// A message over max_message_size is refused with exit 65 and leaves
// nothing in the spool, whether the daemon runs or not.
func TestSendmailTooLarge(t *testing.T) {
	w := newWorld(t)
	w.smConfig(t, "max_message_size = 1024\n", "")
	w.smMakeSpool(t)
	big := "Subject: big\nX-Marker: too-large\n\n" + strings.Repeat(strings.Repeat("x", 99)+"\n", 20)
	// The header that sendmail adds can push a message over the limit too.
	almost := "Subject: almost\nX-Marker: too-large\n\n" + strings.Repeat("x", 1024-40-len("Subject: almost\nX-Marker: too-large\n\n")) + "\n"
	check := func(t *testing.T) {
		for _, msg := range []string{big, almost} {
			out, stderr, code := w.smRun(t, msg, "bob@example.net")
			if code != 65 || !strings.Contains(stderr, "message too large (limit 1024 bytes)") {
				t.Errorf("exit %d, want 65 saying why\n%s%s", code, out, stderr)
			}
		}
		if q := w.queue(t); len(q) != 0 {
			t.Errorf("queue: %+v", q)
		}
		spoolClean(t, filepath.Join(w.dir, "spool")) // no records, no tmp- files
	}
	t.Run("daemon down", check)
	w.startServe(t)
	t.Run("daemon up", check)
}

func TestSendmailMasquerade(t *testing.T) {
	w := newWorld(t)
	w.smConfig(t, "", "\n[masquerade]\nsender = \"noreply@example.com\"\n")
	w.startSink(t)
	w.startServe(t)
	out, stderr, code := w.smRun(t, "From: Alice Example <alice@example.com>\nSubject: masq\nX-Marker: masq\n\nbody\n",
		"-f", "alice@example.com", "bob@example.net")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, stderr)
	}
	m := w.smMessage(t, "X-Marker: masq")
	for _, want := range []string{"X-Sink-Mail-From: <noreply@example.com>", "\r\nFrom: Alice Example <noreply@example.com>\r\n",
		"\r\nReply-To: Alice Example <alice@example.com>\r\n"} {
		if !strings.Contains(m, want) {
			t.Errorf("lacks %q:\n%s", want, m)
		}
	}
}

func TestSendmailConfigPath(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "OUTBOX_CONFIG" {
				return v
			}
			return ""
		}
	}
	for _, tt := range []struct {
		flag, env  string
		privileged bool
		want       string
		warns      bool
	}{
		{"", "", false, config.DefaultPath, false},
		{"", "/tmp/env.toml", false, "/tmp/env.toml", false},
		{"/tmp/c.toml", "/tmp/env.toml", false, "/tmp/c.toml", false},
		{"", "", true, config.DefaultPath, false},
		{"", "/tmp/env.toml", true, config.DefaultPath, false},
		{"/tmp/c.toml", "", true, config.DefaultPath, true},
		{"/tmp/c.toml", "/tmp/env.toml", true, config.DefaultPath, true},
		{config.DefaultPath, "", true, config.DefaultPath, false},
	} {
		got, warning := sendmailConfigPath(tt.flag, env(tt.env), tt.privileged)
		if got != tt.want || (warning != "") != tt.warns {
			t.Errorf("-C %q, OUTBOX_CONFIG %q, privileged %v: %q, warning %q; want %q, warning %v",
				tt.flag, tt.env, tt.privileged, got, warning, tt.want, tt.warns)
		}
		if tt.warns && !strings.HasPrefix(warning, "sendmail: warning: ignoring -C "+tt.flag) {
			t.Errorf("warning %q", warning)
		}
	}
}

func TestSubmitting(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want bool
	}{
		{[]string{"/usr/sbin/sendmail", "-t"}, true},
		{[]string{"sendmail"}, true},
		{[]string{"outbox", "sendmail", "-bs"}, true},
		{[]string{"/usr/bin/mailq"}, false},
		{[]string{"outbox", "queue", "show", "X"}, false},
		{[]string{"outbox"}, false},
		{nil, false},
	} {
		if got := submitting(tt.args); got != tt.want {
			t.Errorf("submitting(%q) = %v", tt.args, got)
		}
	}
}
