package main

// A real SMTP server as the upstream: Debian's Exim (exim4-daemon-light),
// run privately by the test (its own configuration, port, spool, logs and
// maildirs in a temporary directory) with STARTTLS on a certificate from
// the test PKI and AUTH PLAIN, LOGIN and CRAM-MD5 for one static user.
// The real outbox binary relays to it; the test reads the maildirs and
// Exim's log back.

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/outboxmta/outbox/internal/testutil"
)

const (
	eximUser     = "relay@mx.test"
	eximPassword = "Rel4y pass phrase"
)

// eximConfig is the whole Exim configuration; %[1]s is the directory,
// %[2]s the port, %[3]d and %[4]d the uid and gid deliveries run as,
// %[5]s the binary (Exim runs itself for deliveries). Mailboxes exist for
// alice, bob and sender at mx.test; any other recipient gets 550 at RCPT.
// Only authenticated clients may send, and AUTH is offered only over TLS.
const eximConfig = `primary_hostname = mx.test
exim_path = %[5]s
spool_directory = %[1]s/spool
log_file_path = %[1]s/log/%%slog
local_interfaces = 127.0.0.1
daemon_smtp_ports = %[2]s
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s
keep_environment =
tls_advertise_hosts = *
tls_certificate = %[1]s/cert.pem
tls_privatekey = %[1]s/key.pem
domainlist local_domains = mx.test
acl_smtp_rcpt = check_rcpt
log_selector = +8bitmime +received_recipients +incoming_port

begin acl
check_rcpt:
  deny    !authenticated = *
          message = authentication required
  require domains = +local_domains
  require verify = recipient
  accept

begin routers
mailbox:
  driver = accept
  domains = +local_domains
  local_parts = alice : bob : sender
  transport = maildir

begin transports
maildir:
  driver = appendfile
  directory = %[1]s/mail/$local_part_data
  maildir_format
  create_directory
  envelope_to_add
  return_path_add
  user = %[3]d
  group = %[4]d

begin authenticators
plain:
  driver = plaintext
  public_name = PLAIN
  server_advertise_condition = ${if def:tls_in_cipher}
  server_prompts = :
  server_condition = ${if and {{eq{$auth2}{` + eximUser + `}}{eq{$auth3}{` + eximPassword + `}}}}
  server_set_id = $auth2
login:
  driver = plaintext
  public_name = LOGIN
  server_advertise_condition = ${if def:tls_in_cipher}
  server_prompts = Username:: : Password::
  server_condition = ${if and {{eq{$auth1}{` + eximUser + `}}{eq{$auth2}{` + eximPassword + `}}}}
  server_set_id = $auth1
cram:
  driver = cram_md5
  public_name = CRAM-MD5
  server_advertise_condition = ${if def:tls_in_cipher}
  server_secret = ${if eq{$auth1}{` + eximUser + `}{` + eximPassword + `}fail}
  server_set_id = $auth1
`

// eximServer is one private Exim daemon.
type eximServer struct {
	dir  string
	port string
	pki  *testutil.PKI
}

// eximPath finds Exim: $OUTBOX_TEST_EXIM (an unpacked package, for a
// machine whose MTA is another one: Debian installs one MTA at a time),
// else exim4, which Debian installs in /usr/sbin (not always in a user's
// PATH).
func eximPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("OUTBOX_TEST_EXIM"); p != "" {
		return p
	}
	if _, err := exec.LookPath("exim4"); err != nil {
		if _, err := os.Stat("/usr/sbin/exim4"); err == nil {
			return "/usr/sbin/exim4"
		}
	}
	return needTool(t, "exim4")
}

// eximRunsAs returns the uid and gid of Exim's user, which its daemon and
// deliveries run as: started by root with -C, Exim switches to that user
// and keeps no root privilege for deliveries. Only root (or that user) may
// start the daemon at all, so the test needs root, as in CI.
func eximRunsAs(t *testing.T, exim string) (uid, gid int) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the Exim tests need root to start Exim's daemon")
		}
		t.Skip("the Exim tests need root to start Exim's daemon")
	}
	out, err := exec.Command(exim, "-C", "/dev/null", "-bP", "exim_user").CombinedOutput()
	_, name, ok := strings.Cut(strings.TrimSpace(string(out)), " = ")
	if err != nil || !ok {
		t.Fatalf("exim -bP exim_user: %v\n%s", err, out)
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

// startExim starts a private Exim daemon on a free loopback port and stops
// it when the test ends.
func startExim(t *testing.T) *eximServer {
	t.Helper()
	exim := eximPath(t)
	uid, gid := eximRunsAs(t, exim)
	// Not t.TempDir: Exim's user must be able to reach the directory.
	dir, err := os.MkdirTemp("", "outbox-exim-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(freeAddr(t))
	e := &eximServer{dir: dir, port: port, pki: testutil.NewPKI(t, "Outbox test CA")}
	for _, sub := range []string{"spool", "log", "mail"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	for src, dst := range map[string]string{e.pki.CertFile: "cert.pem", e.pki.KeyFile: "key.pem"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		testutil.WriteFile(t, filepath.Join(dir, dst), b, 0o600)
	}
	for _, name := range []string{"spool", "log", "mail", "cert.pem", "key.pem"} {
		if err := os.Lchown(filepath.Join(dir, name), uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "exim.conf")
	testutil.WriteFile(t, conf, fmt.Appendf(nil, eximConfig, dir, port, uid, gid, exim), 0o644)
	// -bV reads the configuration and exits: a mistake shows here rather
	// than as a daemon that never listens.
	if out, err := exec.Command(exim, "-C", conf, "-bV").CombinedOutput(); err != nil {
		t.Fatalf("exim -bV: %v\n%s", err, out)
	}
	// -bdf: the daemon stays in the foreground, so the test can stop it.
	// -oX: only this port (and no notifier socket shared with a system Exim).
	d := dieWithTest(exec.Command(exim, "-C", conf, "-bdf", "-oX", port))
	out := &testutil.SyncBuffer{}
	d.Stdout, d.Stderr = out, out
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { d.Wait(); close(exited) }()
	t.Cleanup(func() {
		d.Process.Signal(syscall.SIGTERM)
		<-exited
		if t.Failed() {
			t.Logf("exim output:\n%s\nexim mainlog:\n%s\npaniclog:\n%s", out, e.log(t, "main"), e.log(t, "panic"))
		}
	})
	waitFor(t, "exim to listen", func() bool {
		select {
		case <-exited:
			t.Fatalf("exim exited: %v\n%s\n%s", d.ProcessState, out, e.log(t, "panic"))
		default:
		}
		return listening(net.JoinHostPort("127.0.0.1", port))
	})
	return e
}

// log returns one of Exim's logs: "main", "reject" or "panic".
func (e *eximServer) log(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, "log", name+"log"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// received returns the line of Exim's main log for the arrival of the
// message with Message-ID msgID, or "".
func (e *eximServer) received(t *testing.T, msgID string) string {
	for line := range strings.SplitSeq(e.log(t, "main"), "\n") {
		if strings.Contains(line, " <= ") && strings.Contains(line, " id="+msgID) {
			return line
		}
	}
	return ""
}

// mailbox returns the messages delivered to local part who, as stored in
// the maildir (Exim stores LF line endings).
func (e *eximServer) mailbox(t *testing.T, who string) []string {
	t.Helper()
	return readFiles(t, filepath.Join(e.dir, "mail", who, "new", "*"))
}

// allMail counts the messages in every mailbox.
func (e *eximServer) allMail(t *testing.T) int {
	n := 0
	for _, who := range []string{"alice", "bob", "sender"} {
		n += len(e.mailbox(t, who))
	}
	return n
}

// relayTo makes the world's upstream e: STARTTLS verified against the
// test CA, AUTH with mech as eximUser with the password in a file, one
// message per connection. Exim 4.96 keeps the protocol it names in
// Received: and its log (utf8esmtpsa) for every later message on a
// connection once one used SMTPUTF8, so whether the SMTP message shared
// the sendmail message's connection would decide what the tests read.
func (w *world) relayTo(t *testing.T, e *eximServer, mech, password string) {
	t.Helper()
	pwFile := filepath.Join(w.dir, "upstream.password")
	testutil.WriteFile(t, pwFile, []byte(password+"\n"), 0o600)
	host, port, _ := net.SplitHostPort(w.sinkAddr)
	old := fmt.Sprintf("[[upstream]]\nhost = %q\nport = %s\ntls = \"none\"\n", host, port)
	up := fmt.Sprintf(`[[upstream]]
host = "127.0.0.1"
port = %s
tls = "starttls"
ca_file = %q
username = %q
password_file = %q
auth = %q
max_messages_per_connection = 1
`, e.port, e.pki.CAFile, eximUser, pwFile, mech)
	w.edit(t, old, up)
}

// submit8bit sends msg through the listener declaring BODY=8BITMIME and
// returns the queue ID.
func (w *world) submit8bit(t *testing.T, from string, to []string, msg string) string {
	t.Helper()
	reply, err := w.smtpTryOpts(t, &smtp.MailOptions{Body: smtp.Body8BitMIME}, from, to, msg)
	if err != nil {
		t.Fatalf("end of DATA: %v", err)
	}
	return reply[strings.LastIndex(reply, " ")+1:]
}

// lf turns CRLF into LF, as Exim stores messages.
func lf(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }

// Mail submitted through sendmail and through SMTP reaches the real
// server's mailboxes once each, intact, over verified STARTTLS with each
// AUTH mechanism.
func TestRealServerRelay(t *testing.T) {
	e := startExim(t)
	for _, tt := range []struct{ auth, logged string }{
		{"plain", "A=plain:" + eximUser},
		{"login", "A=login:" + eximUser},
		{"cram-md5", "A=cram:" + eximUser},
	} {
		t.Run(tt.auth, func(t *testing.T) {
			w := newWorld(t)
			w.relayTo(t, e, tt.auth, eximPassword)
			w.startServe(t)
			before := map[string]int{"alice": len(e.mailbox(t, "alice")), "bob": len(e.mailbox(t, "bob"))}

			// sendmail: 8-bit body, UTF-8 in a header (SMTPUTF8), a line
			// that starts with a dot, a long line.
			smID := "sm-" + tt.auth + "@relay.test"
			smBody := "Grüße, ½ € ünd 日本語\n.a line starting with a dot\n" + strings.Repeat("x", 990) + "\nlast line\n"
			sm := "From: App <app@example.com>\nTo: alice@mx.test\nSubject: Grüße via sendmail\nMessage-ID: <" + smID + ">\n\n" + smBody
			if out, err := w.sendmail(t, sm, "-i", "alice@mx.test"); err != nil {
				t.Fatalf("sendmail: %v\n%s", err, out)
			}
			// SMTP: BODY=8BITMIME, two recipients.
			smtpID := "smtp-" + tt.auth + "@relay.test"
			smtpBody := "Ça va? 8-bit: \xc3\xa9\xe2\x82\xac\r\n\r\n  indented, trailing space \r\nend\r\n"
			w.submit8bit(t, "sender@mx.test", []string{"alice@mx.test", "bob@mx.test"},
				"From: sender@mx.test\r\nTo: alice@mx.test, bob@mx.test\r\nSubject: via smtp\r\nMessage-ID: <"+smtpID+">\r\n\r\n"+smtpBody)

			waitFor(t, "the queue to empty", func() bool { return len(w.queue(t)) == 0 })
			waitFor(t, "three deliveries", func() bool {
				return len(e.mailbox(t, "alice")) == before["alice"]+2 && len(e.mailbox(t, "bob")) == before["bob"]+1
			})
			check := func(who, msgID, body string, want ...string) {
				t.Helper()
				n := 0
				for _, m := range e.mailbox(t, who) {
					if !strings.Contains(m, "Message-ID: <"+msgID+">") {
						continue
					}
					n++
					head, gotBody, _ := strings.Cut(m, "\n\n")
					if gotBody != lf(body) {
						t.Errorf("%s: body of %s changed:\ngot  %q\nwant %q", who, msgID, gotBody, lf(body))
					}
					for _, s := range want {
						if !strings.Contains(head, s) {
							t.Errorf("%s: %s lacks %q:\n%s", who, msgID, s, head)
						}
					}
				}
				if n != 1 {
					t.Errorf("%s got %s %d times, want once", who, msgID, n)
				}
			}
			// Exim's Received: says it took the message over TLS with AUTH
			// (esmtpsa; utf8esmtpsa with SMTPUTF8, which the UTF-8 header
			// of the sendmail message needs) from our EHLO name; our own
			// Received: is below it.
			check("alice", smID, smBody, "by mx.test with utf8esmtpsa", "helo=relay.test", "Subject: Grüße via sendmail\n",
				"Received: by relay.test (Outbox, from userid", "Envelope-to: alice@mx.test\n")
			check("alice", smtpID, smtpBody, "by mx.test with esmtpsa", "Return-path: <sender@mx.test>\n", "Received: from client.test (127.0.0.1:")
			check("bob", smtpID, smtpBody, "by mx.test with esmtpsa", "Envelope-to: bob@mx.test\n")

			// Exim's log: one arrival per message, authenticated with the
			// configured mechanism over TLS, declared 8BITMIME.
			for id, proto := range map[string]string{smID: "utf8esmtpsa", smtpID: "esmtpsa"} {
				line := e.received(t, id)
				for _, s := range []string{" " + tt.logged + " ", " X=TLS1.3:", " P=" + proto + " ", " M8S=8 "} {
					if !strings.Contains(line, s) {
						t.Errorf("exim log line for %s lacks %q: %q", id, s, line)
					}
				}
				if n := strings.Count(e.log(t, "main"), " id="+id); n != 1 {
					t.Errorf("exim received %s %d times", id, n)
				}
			}
		})
	}
}

// A wrong password: the real server's 535 defers the message, which stays
// queued and is retried; nothing is delivered or bounced.
func TestRealServerWrongPassword(t *testing.T) {
	e := startExim(t)
	w := newWorld(t)
	w.relayTo(t, e, "plain", "not the password")
	w.startServe(t)
	if out, err := w.sendmail(t, "Subject: wrong password\n\nbody\n", "-f", "sender@mx.test", "alice@mx.test"); err != nil {
		t.Fatalf("sendmail: %v\n%s", err, out)
	}
	waitFor(t, "a second failed attempt", func() bool {
		q := w.queue(t)
		return len(q) == 1 && q[0].Attempts >= 2
	})
	q := w.queue(t)[0]
	if q.State != "queue" || !strings.Contains(q.LastError, "535") || q.Recipients[0].Status != "pending" {
		t.Errorf("queue entry: state %q, last error %q, recipient %+v; want queued, pending, 535", q.State, q.LastError, q.Recipients[0])
	}
	if failed, _ := w.outbox(t, "queue", "list", "--failed"); strings.Contains(failed, q.ID) {
		t.Errorf("the message is in failed/:\n%s", failed)
	}
	w.serve.stop(t, syscall.SIGTERM)
	var deferred string
	for line := range strings.SplitSeq(w.serve.out.String(), "\n") {
		if strings.Contains(line, "deferred") && strings.Contains(line, q.ID) {
			deferred = line
			break
		}
	}
	if !strings.Contains(deferred, "upstream auth: 535 ") {
		t.Errorf("no deferred log line naming AUTH and 535: %q\n%s", deferred, w.serve.out)
	}
	if strings.Contains(w.serve.out.String(), "not the password") {
		t.Errorf("the log shows the password")
	}
	if log := e.log(t, "main"); !strings.Contains(log, "plain authenticator failed") || !strings.Contains(log, "535") {
		t.Errorf("exim logged no failed AUTH:\n%s", log)
	}
	if n := e.allMail(t); n != 0 {
		t.Errorf("%d messages delivered (or bounced) at the server", n)
	}
}

// The real server refuses one of two recipients at RCPT: that one fails
// with its 5xx, the other is delivered once, the message leaves the queue
// for failed/, and its sender gets a bounce.
func TestRealServerMixedRecipients(t *testing.T) {
	e := startExim(t)
	w := newWorld(t)
	w.relayTo(t, e, "auto", eximPassword)
	w.startServe(t)
	const msgID = "mixed@relay.test"
	id := w.submit8bit(t, "sender@mx.test", []string{"nobody@mx.test", "bob@mx.test"},
		"Subject: mixed\r\nMessage-ID: <"+msgID+">\r\n\r\nbody\r\n")
	waitFor(t, "the message to leave the queue", func() bool { return len(w.queue(t)) == 0 })
	waitFor(t, "bob's copy", func() bool { return len(e.mailbox(t, "bob")) == 1 })
	if m := e.mailbox(t, "bob")[0]; !strings.Contains(m, "Message-ID: <"+msgID+">") {
		t.Errorf("bob got:\n%s", m)
	}
	out, err := w.outbox(t, "queue", "show", "--json", id)
	if err != nil {
		t.Fatalf("queue show: %v\n%s", err, out)
	}
	var q queueEntry
	if err := json.Unmarshal([]byte(out), &q); err != nil {
		t.Fatalf("queue show: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, r := range q.Recipients {
		got[r.Addr] = string(r.Status) + ": " + r.Reply
	}
	if q.State != "failed" || !strings.HasPrefix(got["nobody@mx.test"], "failed: 550 ") || !strings.HasPrefix(got["bob@mx.test"], "delivered: 250 ") {
		t.Errorf("state %q, recipients %q; want failed/, nobody failed with 550, bob delivered", q.State, got)
	}
	if log := e.log(t, "main"); !strings.Contains(log, "rejected RCPT <nobody@mx.test>") || strings.Count(log, " id="+msgID) != 1 {
		t.Errorf("exim log:\n%s", log)
	}
	// And sender@mx.test got the bounce for nobody, through the same server.
	waitFor(t, "the bounce to the sender", func() bool { return len(e.mailbox(t, "sender")) == 1 })
	if b := e.mailbox(t, "sender")[0]; !strings.Contains(b, "Final-Recipient: rfc822; nobody@mx.test") || !strings.Contains(b, "Return-path: <>") {
		t.Errorf("sender got:\n%s", b)
	}
	if n := e.allMail(t); n != 2 {
		t.Errorf("%d messages at the server, want bob's and the bounce", n)
	}
}
