package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/outboxmta/outbox/internal/testutil"
)

// checkServer is an in-process SMTP server for outbox check: STARTTLS or
// implicit TLS with a test certificate, AUTH PLAIN for one user, and a
// record of what clients did.
type checkServer struct {
	addr string
	user string // the one account; its password is "secret"

	mu    sync.Mutex
	auths int      // AUTH attempts
	mails int      // MAIL commands
	got   []string // messages received
}

func startCheckServer(t *testing.T, pki *testutil.PKI, implicit bool) *checkServer {
	t.Helper()
	cs := &checkServer{user: "app@example.com"}
	s := smtp.NewServer(cs)
	s.Domain = "smtp.test"
	s.TLSConfig = pki.ServerTLS
	s.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	var l net.Listener
	var err error
	if implicit {
		l, err = tls.Listen("tcp", "127.0.0.1:0", pki.ServerTLS)
	} else {
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	cs.addr = l.Addr().String()
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return cs
}

func (cs *checkServer) NewSession(*smtp.Conn) (smtp.Session, error) {
	return &checkSession{cs: cs}, nil
}

func (cs *checkServer) counts() (auths, mails int, got []string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.auths, cs.mails, append([]string(nil), cs.got...)
}

type checkSession struct {
	cs     *checkServer
	authed bool
	rcpts  []string
}

func (s *checkSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *checkSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		s.cs.mu.Lock()
		s.cs.auths++
		s.cs.mu.Unlock()
		if user != s.cs.user || pass != "secret" {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
		}
		s.authed = true
		return nil
	}), nil
}

func (s *checkSession) Mail(string, *smtp.MailOptions) error {
	s.cs.mu.Lock()
	defer s.cs.mu.Unlock()
	s.cs.mails++
	if !s.authed {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	return nil
}

func (s *checkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *checkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cs.mu.Lock()
	defer s.cs.mu.Unlock()
	s.cs.got = append(s.cs.got, "X-Rcpt: "+strings.Join(s.rcpts, ",")+"\r\n"+string(b))
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as TEST123"}
}

func (s *checkSession) Reset()        { s.rcpts = nil }
func (s *checkSession) Logout() error { return nil }

// runCheck writes a configuration with one upstream (the TOML lines given)
// and runs the real binary's `outbox check` with args; it returns the
// exit status and the output.
func runCheck(t *testing.T, upstream string, args ...string) (int, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "outbox.toml")
	testutil.WriteFile(t, cfg, []byte(fmt.Sprintf("hostname = \"relay.test\"\ndomain = \"example.com\"\n\n[spool]\ndir = %q\n\n[[upstream]]\n%s\n",
		filepath.Join(dir, "spool"), upstream)), 0o600)
	cmd := exec.Command(filepath.Join(bin, "outbox"), append([]string{"check", "--config", cfg}, args...)...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("outbox check: %v", err)
	return 0, ""
}

// upstreamTOML is the [[upstream]] table for cs, with the lines in extra
// (a username there replaces the server's account).
func upstreamTOML(cs *checkServer, tlsMode, extra string) string {
	host, port, _ := net.SplitHostPort(cs.addr)
	user := fmt.Sprintf("username = %q\n", cs.user)
	if strings.Contains(extra, "username = ") {
		user = ""
	}
	return fmt.Sprintf("host = %q\nport = %s\ntls = %q\n%spassword = \"secret\"\n%s", host, port, tlsMode, user, extra)
}

func TestCheck(t *testing.T) {
	pki := testutil.NewPKI(t, "Outbox test CA")
	other := testutil.NewPKI(t, "Some other CA")
	ca := fmt.Sprintf("ca_file = %q\n", pki.CAFile)

	for _, tt := range []struct {
		name     string
		implicit bool
		tlsMode  string
		extra    string
		status   int
		want     []string // in the output
		auths    int      // AUTH attempts the server saw
	}{
		{"good certificate, auth ok", false, "starttls", ca, 0, []string{
			"tls:         TLS 1.3",
			"certificate: verified for 127.0.0.1",
			"0 subject: CN=localhost",
			"issuer:  CN=Outbox test CA",
			"expires: ",
			"WARNING: the server's certificate expires in 23 hours", // NewPKI's last a day
			"extensions:  ", "AUTH PLAIN",
			"auth:        PLAIN as app@example.com: accepted",
			"upstream 127.0.0.1: OK",
		}, 1},
		{"implicit TLS", true, "implicit", ca, 0, []string{"certificate: verified for 127.0.0.1", "upstream 127.0.0.1: OK"}, 1},
		{"wrong name", false, "starttls", ca + "tls_server_name = \"wrong.example\"\n", 69, []string{
			"certificate: NOT verified for wrong.example: x509: certificate is valid for",
			"0 subject: CN=localhost", "issuer:  CN=Outbox test CA",
			"FAILED: upstream starttls: certificate verification failed",
		}, 0},
		{"unknown CA", false, "starttls", fmt.Sprintf("ca_file = %q\n", other.CAFile), 69, []string{
			"certificate: NOT verified for 127.0.0.1: x509: certificate signed by unknown authority",
			"0 subject: CN=localhost", "issuer:  CN=Outbox test CA", "FAILED",
		}, 0},
		{"unknown CA, implicit TLS", true, "implicit", fmt.Sprintf("ca_file = %q\n", other.CAFile), 69, []string{
			"certificate: NOT verified for 127.0.0.1: x509: certificate signed by unknown authority", "0 subject: CN=localhost",
		}, 0},
		{"auth refused", false, "starttls", ca + "username = \"intruder@example.com\"\n", 78, []string{
			"certificate: verified for 127.0.0.1", "FAILED: ", "535",
		}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cs := startCheckServer(t, pki, tt.implicit)
			status, out := runCheck(t, upstreamTOML(cs, tt.tlsMode, tt.extra))
			if status != tt.status {
				t.Errorf("exit status %d, want %d", status, tt.status)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q", w)
				}
			}
			auths, mails, _ := cs.counts()
			if auths != tt.auths || mails != 0 {
				t.Errorf("server saw %d AUTH and %d MAIL, want %d and none", auths, mails, tt.auths)
			}
			if strings.Contains(out, "secret") {
				t.Error("the output shows the password")
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

func TestCheckSendTest(t *testing.T) {
	pki := testutil.NewPKI(t, "Outbox test CA")
	cs := startCheckServer(t, pki, false)
	status, out := runCheck(t, upstreamTOML(cs, "starttls", fmt.Sprintf("ca_file = %q\n", pki.CAFile)),
		"--send-test", "admin@example.net")
	if status != 0 || !strings.Contains(out, "send-test:   from <app@example.com> to <admin@example.net>: accepted: 250 2.0.0 Ok: queued as TEST123") {
		t.Errorf("exit status %d, output:\n%s", status, out)
	}
	_, _, got := cs.counts()
	if len(got) != 1 {
		t.Fatalf("server received %d messages, want 1", len(got))
	}
	for _, want := range []string{"X-Rcpt: admin@example.net\r\n", "\r\nSubject: Outbox test message from relay.test at ", "\r\nTo: <admin@example.net>\r\n", "\r\nMessage-ID: <"} {
		if !strings.Contains(got[0], want) {
			t.Errorf("test message lacks %q:\n%s", want, got[0])
		}
	}
}

// The exit statuses --help documents, for what they are not tested above.
func TestCheckStatus(t *testing.T) {
	if status, out := runCheck(t, "host = \"127.0.0.1\"\nport = 1\ntls = \"none\"\n"); status != 69 || !strings.Contains(out, "FAILED: upstream connect") {
		t.Errorf("unreachable upstream: %d\n%s", status, out)
	}
	if status, out := runCheck(t, "host = \"127.0.0.1\"\ntls = \"bogus\"\n"); status != 78 {
		t.Errorf("invalid configuration: %d\n%s", status, out)
	}
	if status, out := runCheck(t, "host = \"127.0.0.1\"\n", "--send-test", "not an address"); status != 64 {
		t.Errorf("bad --send-test address: %d\n%s", status, out)
	}
	cmd := exec.Command(filepath.Join(bin, "outbox"), "check", "--help")
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), "69  EX_UNAVAILABLE") || !strings.Contains(string(out), "78  EX_CONFIG") {
		t.Errorf("check --help: %v\n%s", err, out)
	}
}

func TestCheckExpiryWarning(t *testing.T) {
	leaf := testutil.NewPKI(t, "Outbox test CA").Leaf
	for _, tt := range []struct {
		before time.Duration // now is this long before the expiry
		want   string        // the warning, "" for none
	}{
		{30 * 24 * time.Hour, ""},
		{15 * 24 * time.Hour, ""},
		{13*24*time.Hour + time.Hour, "WARNING: the server's certificate expires in 13 days"},
		{-3 * time.Hour, "WARNING: the server's certificate expired 3 hours ago"},
	} {
		var b strings.Builder
		printChain(&b, []*x509.Certificate{leaf}, leaf.NotAfter.Add(-tt.before))
		got := ""
		if _, w, ok := strings.Cut(b.String(), "  WARNING"); ok {
			got = "WARNING" + strings.SplitN(w, " (", 2)[0]
			got = strings.TrimSuffix(got, "\n")
		}
		if got != tt.want {
			t.Errorf("%v before expiry: warning %q, want %q\n%s", tt.before, got, tt.want, b.String())
		}
	}
}
