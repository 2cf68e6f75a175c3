package main

// Real callers of sendmail from Debian's packages (PHP's mail(), bsd-mailx)
// and cron's exact command lines, run against the real binary under its
// real names (sendmail, mailq), each message followed to the upstream sink
// and checked header by header.

import (
	"io"
	"math"
	"net/mail"
	"net/textproto"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sunk is one message as the sink stored it.
type sunk struct {
	raw      string      // the whole file
	mailFrom string      // X-Sink-Mail-From, without the brackets
	rcptTo   []string    // X-Sink-Rcpt-To, without the brackets
	header   mail.Header // including the X-Sink- lines
	body     string      // after the empty line, CRLF kept
}

func parseSunk(t *testing.T, raw string) sunk {
	t.Helper()
	m, err := mail.ReadMessage(strings.NewReader(raw))
	if err != nil {
		t.Fatalf("the sink's message does not parse: %v\n%s", err, raw)
	}
	body, err := io.ReadAll(m.Body)
	if err != nil {
		t.Fatal(err)
	}
	s := sunk{raw: raw, header: m.Header, body: string(body)}
	unbracket := func(v string) string { return strings.TrimSuffix(strings.TrimPrefix(v, "<"), ">") }
	s.mailFrom = unbracket(m.Header.Get("X-Sink-Mail-From"))
	for _, r := range m.Header["X-Sink-Rcpt-To"] {
		s.rcptTo = append(s.rcptTo, unbracket(r))
	}
	return s
}

// field returns the values of the header fields called name, in any case.
func (m sunk) field(name string) []string {
	return m.header[textproto.CanonicalMIMEHeaderKey(name)]
}

// deliveredOne waits for the one message of this world at the sink and for
// the queue to empty, and fails unless exactly one message arrived.
func (w *world) deliveredOne(t *testing.T) sunk {
	t.Helper()
	waitFor(t, "the message at the sink", func() bool { return len(w.delivered(t)) >= 1 })
	waitFor(t, "the queue to empty", func() bool { return len(w.queue(t)) == 0 })
	got := w.delivered(t)
	if len(got) != 1 {
		t.Fatalf("the sink got %d messages, want 1:\n%s", len(got), strings.Join(got, "\n----\n"))
	}
	return parseSunk(t, got[0])
}

// want is what one delivered message should show.
type want struct {
	mailFrom string            // envelope sender
	rcptTo   []string          // envelope recipients, in order
	header   map[string]string // exact values of fields that must occur once
	body     string            // exact body, CRLF
}

var messageIDRE = regexp.MustCompile(`^<[^<>@\s]+@[^<>@\s]+>$`)

// check compares m with w and checks what every message must have: CRLF
// line endings only, one Received: from the daemon naming the caller's uid,
// exactly one From:, To:, Subject:, Date: and Message-ID:, a Date: that
// parses and is today, a Message-ID: of the form <left@right>.
func (m sunk) check(t *testing.T, w want) {
	t.Helper()
	defer func() {
		if t.Failed() {
			t.Logf("message at the sink:\n%s", m.raw)
		}
	}()
	if n, crlf := strings.Count(m.raw, "\n"), strings.Count(m.raw, "\r\n"); n != crlf || strings.Contains(strings.ReplaceAll(m.raw, "\r\n", ""), "\r") {
		t.Errorf("line endings: %d LF of which %d in CRLF, or a bare CR; want CRLF only", n, crlf)
	}
	if m.mailFrom != w.mailFrom {
		t.Errorf("envelope sender (X-Sink-Mail-From) <%s>, want <%s>", m.mailFrom, w.mailFrom)
	}
	if !slices.Equal(m.rcptTo, w.rcptTo) {
		t.Errorf("envelope recipients (X-Sink-Rcpt-To) %q, want %q", m.rcptTo, w.rcptTo)
	}
	for _, name := range []string{"From", "To", "Subject", "Date", "Message-ID", "Received"} {
		if got := m.field(name); len(got) != 1 {
			t.Errorf("%d %s: fields, want 1: %q", len(got), name, got)
		}
	}
	if rcv, prefix := m.header.Get("Received"), "by relay.test (Outbox, from userid "+strconv.Itoa(os.Getuid())+")"; !strings.HasPrefix(rcv, prefix) {
		t.Errorf("Received: %q, want it to start with %q", rcv, prefix)
	}
	for name, v := range w.header {
		if got := m.field(name); len(got) != 1 || got[0] != v {
			t.Errorf("%s: %q, want exactly one %q", name, got, v)
		}
	}
	if d, err := mail.ParseDate(m.header.Get("Date")); err != nil {
		t.Errorf("Date: %q: %v", m.header.Get("Date"), err)
	} else if age := time.Since(d); math.Abs(age.Hours()) > 24 {
		// Sanity, not speed: a wrong zone or year shows as days off.
		t.Errorf("Date: %q is %v away from now", m.header.Get("Date"), age)
	}
	if id := m.header.Get("Message-ID"); !messageIDRE.MatchString(id) {
		t.Errorf("Message-ID: %q is not <left@right>", id)
	}
	if m.body != w.body {
		t.Errorf("body %q, want %q", m.body, w.body)
	}
}

// login is the test's login name, which sendmail takes from the password
// database for the envelope sender when there is no -f.
func login(t *testing.T) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// callerEnv is the environment a caller runs in: the test's, with the
// world's configuration and a private HOME (mailx writes dead.letter there
// when sendmail fails, and reads ~/.mailrc).
func (w *world) callerEnv(extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "MAILRC=") || strings.HasPrefix(kv, "OUTBOX_CONFIG=")
	})
	return append(env, append([]string{"HOME=" + w.dir, "OUTBOX_CONFIG=" + w.config}, extra...)...)
}

// PHP's mail() with sendmail_path in PHP's default form ("sendmail -t -i",
// the compiled-in default) pointing at our binary. PHP writes To: and
// Subject: with CRLF and the body with whatever the script gave (LF here),
// so the message arrives with mixed line endings.
func TestCallerPHPMail(t *testing.T) {
	php := needTool(t, "php")
	out, err := exec.Command(php, "-r", `echo ini_get("sendmail_path");`).Output()
	if err != nil {
		t.Fatalf("php: %v", err)
	}
	def := strings.Fields(string(out))
	if len(def) == 0 || filepath.Base(def[0]) != "sendmail" {
		t.Fatalf("PHP's default sendmail_path is %q, want sendmail with options", out)
	}
	// PHP's default command with only the path replaced: "<bin>/sendmail -t -i".
	sendmailPath := strings.Join(append([]string{filepath.Join(bin, "sendmail")}, def[1:]...), " ")
	if !strings.HasSuffix(sendmailPath, "/sendmail -t -i") {
		t.Errorf("PHP's default sendmail_path %q is not \"... -t -i\"", out)
	}

	for _, tc := range []struct {
		name string
		code string // PHP, printing mail()'s result with var_export
		want want
	}{{
		name: "default",
		code: `var_export(mail("bob@example.net", "Subject", "Body\nline 2", "From: app@example.com"));`,
		want: want{
			mailFrom: login(t) + "@example.com", // no -f: the caller's login name
			rcptTo:   []string{"bob@example.net"},
			header:   map[string]string{"From": "app@example.com", "To": "bob@example.net", "Subject": "Subject"},
			body:     "Body\r\nline 2\r\n",
		},
	}, {
		// The fifth argument as most PHP applications use it, for the
		// envelope sender; several To: recipients and a Cc:, an array of
		// headers, and a lone "." line that only -i keeps from ending the
		// message.
		name: "envelope sender and Cc",
		code: `var_export(mail("bob@example.net, Carol <carol@example.net>", "Report for today",
			"first\n.\n..leading dots\nlast",
			["From" => "App <app@example.com>", "Cc" => "dave@example.net", "X-Mailer" => "PHP"],
			"-fbounces@example.com"));`,
		want: want{
			mailFrom: "bounces@example.com",
			rcptTo:   []string{"bob@example.net", "carol@example.net", "dave@example.net"},
			header: map[string]string{"From": "App <app@example.com>", "To": "bob@example.net, Carol <carol@example.net>",
				"Subject": "Report for today", "Cc": "dave@example.net", "X-Mailer": "PHP"},
			body: "first\r\n.\r\n..leading dots\r\nlast\r\n",
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.startSink(t)
			w.startServe(t)
			cmd := exec.Command(php, "-d", "sendmail_path="+sendmailPath, "-r", tc.code)
			// PHP runs sendmail_path with sh -c, passing its environment on.
			cmd.Env = w.callerEnv()
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil || string(out) != "true" {
				t.Fatalf("php: %v; mail() printed %q, want true; stderr:\n%s", err, out, stderr.String())
			}
			w.deliveredOne(t).check(t, tc.want)
		})
	}
}

// bsd-mailx, as a user or script sends mail from the shell. It runs the
// program in its "sendmail" variable (default /usr/sbin/sendmail), which
// a MAILRC file sets to our binary; argv[0] is then "sendmail" and the
// arguments "-i -t". mailx writes To:, Cc:, Subject: and MIME headers;
// sendmail adds From: from the login name, Date: and Message-ID:.
func TestCallerMailx(t *testing.T) {
	mailx := needTool(t, "bsd-mailx")
	w := newWorld(t)
	w.startSink(t)
	w.startServe(t)
	rc := filepath.Join(w.dir, "mailrc")
	if err := os.WriteFile(rc, []byte("set sendmail="+filepath.Join(bin, "sendmail")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(mailx, "-s", "Subject here", "-c", "carol@example.net", "bob@example.net")
	cmd.Env = w.callerEnv("MAILRC=" + rc)
	cmd.Stdin = strings.NewReader("Hello from mailx.\n.\nGrüße, 8-bit text\n")
	// mailx does not wait for sendmail, but sendmail inherits the output
	// pipe, so this returns once sendmail has exited too.
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Fatalf("mailx: %v\n%s", err, out)
	}
	if dead, err := os.ReadFile(filepath.Join(w.dir, "dead.letter")); err == nil {
		t.Fatalf("mailx saved dead.letter: sendmail failed:\n%s", dead)
	}
	m := w.deliveredOne(t)
	m.check(t, want{
		mailFrom: login(t) + "@example.com",
		rcptTo:   []string{"bob@example.net", "carol@example.net"},
		header: map[string]string{"From": login(t) + "@example.com", "To": "bob@example.net", "Cc": "carol@example.net",
			"Subject": "Subject here", "Content-Transfer-Encoding": "8bit"},
		body: "Hello from mailx.\r\n.\r\nGrüße, 8-bit text\r\n",
	})
}

// cron's own command lines, with the message on standard input as each
// cron writes it. The recipient root is an alias (admin@example.net in the
// test configuration), expanded by the daemon; the envelope sender is root
// qualified with the configured domain.
func TestCallerCron(t *testing.T) {
	const output = "backup done\n.\nsize: 42 MB, température 20 °C\n"
	const wantBody = "backup done\r\n.\r\nsize: 42 MB, température 20 °C\r\n"
	cronEnv := "X-Cron-Env: <SHELL=/bin/sh>\nX-Cron-Env: <HOME=/root>\nX-Cron-Env: <PATH=/usr/bin:/bin>\nX-Cron-Env: <LOGNAME=root>\n"
	for _, tc := range []struct {
		name string
		args []string
		msg  string
		want want
	}{{
		// Debian's cron: MAILARGS "%s -FCronDaemon -i -B8BITMIME -oem %s",
		// do_command.c's header with From: root (Cron Daemon).
		name: "debian",
		args: []string{"-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"},
		msg: "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@host> /usr/local/bin/backup\n" +
			"MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n" +
			cronEnv + "\n" + output,
		want: want{header: map[string]string{"From": "root@example.com (Cron Daemon)", "To": "root@example.com",
			"Subject": "Cron <root@host> /usr/local/bin/backup", "X-Cron-Env": "", "Content-Type": "text/plain; charset=UTF-8"}},
	}, {
		// The same without From:, as from a cron built without it (or a
		// MAILFROM-less variant): sendmail adds one, with -F's display name.
		name: "debian without From",
		args: []string{"-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"},
		msg: "To: root\nSubject: Cron <root@host> /usr/local/bin/backup\n" +
			"MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n" +
			cronEnv + "\n" + output,
		want: want{header: map[string]string{"From": "CronDaemon <root@example.com>", "To": "root@example.com",
			"Subject": "Cron <root@host> /usr/local/bin/backup"}},
	}, {
		// cronie: MAILARGS "%s -FCronDaemon -i -odi -oem -oi -t -f %s",
		// recipients from To:.
		name: "cronie",
		args: []string{"-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"},
		msg: "From: \"(Cron Daemon)\" <root>\nTo: root\nSubject: Cron <root@host> /usr/local/bin/backup\n" +
			"MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n" +
			"Auto-Submitted: auto-generated\nPrecedence: bulk\n" + cronEnv + "\n" + output,
		want: want{header: map[string]string{"From": `"(Cron Daemon)" <root@example.com>`, "To": "root@example.com",
			"Subject": "Cron <root@host> /usr/local/bin/backup", "Auto-Submitted": "auto-generated"}},
	}, {
		// cronie without From:: -F names the added From:, -f its address.
		name: "cronie without From",
		args: []string{"-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"},
		msg:  "To: root\nSubject: Cron <root@host> true\n\n" + output,
		want: want{header: map[string]string{"From": "CronDaemon <root@example.com>", "To": "root@example.com",
			"Subject": "Cron <root@host> true"}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.startSink(t)
			w.startServe(t)
			cmd := exec.Command(filepath.Join(bin, "sendmail"), tc.args...)
			cmd.Env = w.callerEnv()
			cmd.Stdin = strings.NewReader(tc.msg)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("sendmail %q: %v\n%s", tc.args, err, out)
			}
			m := w.deliveredOne(t)
			tc.want.mailFrom = "root@example.com"
			tc.want.rcptTo = []string{"admin@example.net"}
			tc.want.body = wantBody
			if _, ok := tc.want.header["X-Cron-Env"]; ok {
				delete(tc.want.header, "X-Cron-Env")
				if got := m.header["X-Cron-Env"]; len(got) != 4 || got[0] != "<SHELL=/bin/sh>" || got[3] != "<LOGNAME=root>" {
					t.Errorf("X-Cron-Env: %q, want cron's four in order", got)
				}
			}
			m.check(t, tc.want)
		})
	}
}

// mailq under its real name lists a message the upstream has not taken in
// Postfix's layout; sendmail -bp prints the same list.
func TestCallerMailq(t *testing.T) {
	w := newWorld(t)
	w.startServe(t) // no sink: the upstream is down
	if out, err := w.sendmail(t, "Subject: stuck\n\nwaiting for the upstream\n", "-f", "app@example.com", "bob@example.net"); err != nil {
		t.Fatalf("sendmail: %v\n%s", err, out)
	}
	var q []queueEntry
	waitFor(t, "a failed attempt", func() bool {
		q = w.queue(t)
		return len(q) == 1 && q[0].State == "queue" && q[0].Attempts >= 1
	})
	id, size := q[0].ID, q[0].Size

	mailq := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Env = w.callerEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %q: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	for _, run := range [][]string{{"mailq"}, {"sendmail", "-bp"}} {
		out := mailq(run[0], run[1:]...)
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		bad := func(format string, args ...any) {
			t.Helper()
			t.Errorf("%s: "+format+"\n%s", append(append([]any{run}, args...), out)...)
		}
		if len(lines) < 5 {
			bad("%d lines, want header, message, recipient, blank, footer", len(lines))
			continue
		}
		if !strings.HasPrefix(lines[0], "-Queue ID-") || !strings.Contains(lines[0], "-Sender/Recipient-") {
			bad("header line %q", lines[0])
		}
		// ID, size, arrival (Mon Jan _2 15:04:05), sender.
		f := strings.Fields(lines[1])
		if len(f) != 7 || f[0] != id || f[1] != strconv.FormatInt(size, 10) || f[6] != "app@example.com" {
			bad("message line %q, want %s, %d, the arrival time, app@example.com", lines[1], id, size)
		} else if _, err := time.Parse("Mon Jan 2 15:04:05", strings.Join(f[2:6], " ")); err != nil {
			bad("arrival time in %q: %v", lines[1], err)
		}
		// Optionally the reason for the delay in parentheses, then the
		// recipient, indented.
		rest := lines[2 : len(lines)-2]
		if len(rest) > 0 && strings.HasPrefix(strings.TrimSpace(rest[0]), "(") {
			rest = rest[1:]
		}
		if len(rest) != 1 || strings.TrimSpace(rest[0]) != "bob@example.net" || !strings.HasPrefix(rest[0], "      ") {
			bad("recipient lines %q, want bob@example.net indented", rest)
		}
		if lines[len(lines)-2] != "" {
			bad("no empty line after the message")
		}
		if want := "-- " + strconv.FormatInt((size+1023)/1024, 10) + " Kbytes in 1 Request."; lines[len(lines)-1] != want {
			bad("footer %q, want %q", lines[len(lines)-1], want)
		}
	}

	w.startSink(t)
	m := w.deliveredOne(t)
	m.check(t, want{
		mailFrom: "app@example.com",
		rcptTo:   []string{"bob@example.net"},
		header:   map[string]string{"From": "app@example.com", "To": "undisclosed-recipients:;", "Subject": "stuck"},
		body:     "waiting for the upstream\r\n",
	})
	if out := mailq("mailq"); out != "Mail queue is empty\n" {
		t.Errorf("mailq after delivery: %q", out)
	}
}
