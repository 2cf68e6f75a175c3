package main

// Real SMTP clients (Python's smtplib, swaks) against the real binary's
// listener with STARTTLS and AUTH.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxmta/outbox/internal/testutil"
	"golang.org/x/crypto/bcrypt"
)

const (
	clientUser     = "app"
	clientPassword = "s3cret pass: with spaces"
)

// needTool returns the path of a program a test drives. Without it the
// test is skipped, except in CI (CI=true), which installs it (.ci/run).
func needTool(t *testing.T, name string) string {
	t.Helper()
	return testutil.NeedTool(t, name)
}

// newAuthWorld is newWorld with a listener that offers STARTTLS and AUTH
// (auth = "optional") and trusts no network the tests connect from, so
// every client must authenticate. usersMode is the users file's mode.
func newAuthWorld(t *testing.T, usersMode os.FileMode) (w *world, usersFile string) {
	t.Helper()
	w = newWorld(t)
	pki := testutil.NewPKI(t, "Outbox test CA")
	certFile, keyFile := pki.CertFile, pki.KeyFile
	hash, err := bcrypt.GenerateFromPassword([]byte(clientPassword), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	usersFile = filepath.Join(w.dir, "users")
	if err := os.WriteFile(usersFile, fmt.Appendf(nil, "# user:bcrypt hash\n%s:%s\n", clientUser, hash), usersMode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(usersFile, usersMode); err != nil {
		t.Fatal(err)
	}
	listener := fmt.Sprintf("[[listener]]\naddress = %q\n", w.listen)
	withAuth := listener + fmt.Sprintf(`tls = "starttls"
cert_file = %q
key_file = %q
auth = "optional"
users_file = %q
allow_networks = ["192.0.2.0/24"]
`, certFile, keyFile, usersFile)
	w.edit(t, listener, withAuth)
	return w, usersFile
}

// pythonSMTP is a client written with Python's smtplib. Arguments: port,
// mode (starttls-login, starttls-login-LOGIN or plain), user, password,
// marker. It prints the server's refusal and exits 3 if the message is
// refused.
const pythonSMTP = `
import smtplib, ssl, sys
port, mode, user, password, marker = sys.argv[1:6]
msg = "From: a@example.com\r\nTo: b@example.net\r\nSubject: python\r\nX-Marker: %s\r\n\r\nfrom smtplib\r\n" % marker
s = smtplib.SMTP("127.0.0.1", int(port), local_hostname="python.test", timeout=30)
try:
    if mode.startswith("starttls"):
        s.starttls(context=ssl._create_unverified_context())
        s.ehlo("python.test")
        if mode == "starttls-login-LOGIN":
            s.user, s.password = user, password
            s.auth("LOGIN", s.auth_login)
        else:
            s.login(user, password)
    s.sendmail("a@example.com", ["b@example.net"], msg)
except (smtplib.SMTPSenderRefused, smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError, smtplib.SMTPAuthenticationError) as e:
    print("refused:", e)
    sys.exit(3)
s.quit()
print("sent")
`

func runPython(t *testing.T, python string, w *world, mode, password, marker string) (string, error) {
	t.Helper()
	_, port, _ := net.SplitHostPort(w.listen)
	out, err := exec.Command(python, "-c", pythonSMTP, port, mode, clientUser, password, marker).CombinedOutput()
	return string(out), err
}

func TestClientPythonSmtplib(t *testing.T) {
	python := needTool(t, "python3")
	w, _ := newAuthWorld(t, 0o600)
	w.startSink(t)
	w.startServe(t)

	// (c) No TLS, no AUTH, from outside allow_networks: refused.
	out, err := runPython(t, python, w, "plain", "", "py-refused")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(out, "530") || !strings.Contains(out, "Authentication required") {
		t.Errorf("plain smtplib from outside allow_networks: %v\n%s", err, out)
	}
	// A wrong password.
	out, err = runPython(t, python, w, "starttls-login", "wrong", "py-wrong")
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(out, "535") {
		t.Errorf("smtplib with a wrong password: %v\n%s", err, out)
	}
	// (a) STARTTLS, login (PLAIN, smtplib's choice), sendmail; and LOGIN.
	for _, mode := range []string{"starttls-login", "starttls-login-LOGIN"} {
		if out, err := runPython(t, python, w, mode, clientPassword, "py-"+mode); err != nil || !strings.Contains(out, "sent") {
			t.Fatalf("smtplib %s: %v\n%s", mode, err, out)
		}
	}
	for _, mode := range []string{"starttls-login", "starttls-login-LOGIN"} {
		marker := "X-Marker: py-" + mode + "\r\n"
		waitFor(t, marker, func() bool { return w.count(t, marker) == 1 })
	}
	for _, m := range w.delivered(t) {
		for _, want := range []string{"Received: from python.test (127.0.0.1:", "\r\n\t(using TLSv1.", "\r\n\t(Authenticated sender: app)\r\n\tby relay.test (Outbox) with ESMTPSA id "} {
			if !strings.Contains(m, want) {
				t.Errorf("delivered message lacks %q:\n%s", want, m)
			}
		}
	}
	waitFor(t, "the queue to empty", func() bool { return len(w.queue(t)) == 0 })
	for _, marker := range []string{"py-refused", "py-wrong"} {
		if n := w.count(t, marker); n != 0 {
			t.Errorf("refused message %s delivered %d times", marker, n)
		}
	}
}

func TestClientSwaks(t *testing.T) {
	swaks := needTool(t, "swaks")
	w, _ := newAuthWorld(t, 0o600)
	w.startSink(t)
	w.startServe(t)
	run := func(mech, password, marker string) (string, error) {
		out, err := exec.Command(swaks, "--server", w.listen, "--tls", "--helo", "swaks.test",
			"--auth", mech, "--auth-user", clientUser, "--auth-password", password,
			"--from", "a@example.com", "--to", "b@example.net",
			"--header", "X-Marker: "+marker, "--body", "from swaks").CombinedOutput()
		return string(out), err
	}

	// A wrong password: swaks fails and nothing is queued.
	out, err := run("PLAIN", "wrong", "swaks-wrong")
	if err == nil || !strings.Contains(out, "535 5.7.8") {
		t.Errorf("swaks with a wrong password: %v\n%s", err, out)
	}
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		if out, err := run(mech, clientPassword, "swaks-"+mech); err != nil {
			t.Fatalf("swaks --auth %s: %v\n%s", mech, err, out)
		} else if !strings.Contains(out, "235 2.0.0") || !strings.Contains(out, "queued as") {
			t.Errorf("swaks --auth %s transcript:\n%s", mech, out)
		}
	}
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		marker := "X-Marker: swaks-" + mech + "\r\n"
		waitFor(t, marker, func() bool { return w.count(t, marker) == 1 })
	}
	waitFor(t, "the queue to empty", func() bool { return len(w.queue(t)) == 0 })
	if n := w.count(t, "swaks-wrong"); n != 0 {
		t.Errorf("the message with a wrong password was delivered %d times", n)
	}
	for _, m := range w.delivered(t) {
		if !strings.Contains(m, "(Authenticated sender: app)") || !strings.Contains(m, "with ESMTPSA id") {
			t.Errorf("delivered message lacks the authenticated Received: header:\n%s", m)
		}
	}
	if err := w.serve.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("outbox serve: %v", err)
	}
	if log := w.serve.out.String(); !strings.Contains(log, "authentication failed") || strings.Contains(log, clientPassword) {
		t.Errorf("the daemon's log should note the failure without any password:\n%s", log)
	}
}

// The daemon will not start with a users file every local user can read.
func TestServeRefusesReadableUsersFile(t *testing.T) {
	w, usersFile := newAuthWorld(t, 0o644)
	p := start(t, "outbox", "serve", "--config", w.config)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("outbox serve exited 0")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("outbox serve started with a world-readable users file")
	}
	if out := p.out.String(); !strings.Contains(out, usersFile) || !strings.Contains(out, "0644") {
		t.Errorf("the error does not name the file and its mode:\n%s", out)
	}
}
