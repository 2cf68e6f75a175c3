package listener

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/outboxmta/outbox/internal/testutil"
	"github.com/outboxmta/outbox/spool"
)

// serveLogged is serve with the server's log kept.
func serveLogged(t *testing.T, ep Endpoint) (*fixture, *testutil.SyncBuffer) {
	t.Helper()
	f := serve(t, ep)
	return f, f.logs
}

// dial connects to addr from the local address from ("" for any) and says
// EHLO, in plain text (mode TLSNone), after STARTTLS or over implicit TLS.
func dial(t *testing.T, addr, from string, mode TLSMode, cfg *tls.Config) *smtp.Client {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var c *smtp.Client
	switch mode {
	case TLSImplicit:
		c = smtp.NewClient(tls.Client(conn, cfg))
	case TLSStartTLS:
		if c, err = smtp.NewClientStartTLS(conn, cfg); err != nil {
			conn.Close()
			t.Fatal(err)
		}
	default:
		c = smtp.NewClient(conn)
	}
	// Bound a hang: a stuck test then says where it stuck.
	c.CommandTimeout, c.SubmissionTimeout = 30*time.Second, 30*time.Second
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	return c
}

// send runs one transaction and returns the first error.
func send(c *smtp.Client, msg string) error {
	if err := c.Mail("app@example.com", nil); err != nil {
		return err
	}
	if err := c.Rcpt("bob@example.net", nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	w.Write([]byte(msg))
	return w.Close()
}

// code returns the SMTP reply code in err, or 0.
func code(err error) int {
	var e *smtp.SMTPError
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// STARTTLS is offered exactly when tls = "starttls", and never again once
// the session runs over TLS.
func TestSTARTTLSOffered(t *testing.T) {
	pki := testutil.NewPKI(t, "Outbox test CA")
	for _, tt := range []struct {
		mode TLSMode
		want bool
	}{{"", false}, {TLSNone, false}, {TLSStartTLS, true}, {TLSImplicit, false}} {
		t.Run(string(tt.mode), func(t *testing.T) {
			f := serve(t, Endpoint{Networks: loopback, TLS: tt.mode, CertFile: pki.CertFile, KeyFile: pki.KeyFile})
			first := TLSNone
			if tt.mode == TLSImplicit {
				first = TLSImplicit
			}
			c := dial(t, f.addr, "", first, pki.Client())
			if got, _ := c.Extension("STARTTLS"); got != tt.want {
				t.Fatalf("STARTTLS offered: %v, want %v", got, tt.want)
			}
			if !tt.want {
				return
			}
			c = dial(t, f.addr, "", TLSStartTLS, pki.Client())
			if got, _ := c.Extension("STARTTLS"); got {
				t.Error("STARTTLS offered again over TLS")
			}
			st, _ := c.TLSConnectionState()
			if !st.PeerCertificates[0].Equal(pki.Leaf) {
				t.Error("server presented another certificate")
			}
		})
	}
}

// Mail over TLS is marked ESMTPS in its Received: header, with the
// protocol and cipher as Postfix writes them.
func TestTLSReceived(t *testing.T) {
	pki := testutil.NewPKI(t, "Outbox test CA")
	for _, mode := range []TLSMode{TLSStartTLS, TLSImplicit} {
		t.Run(string(mode), func(t *testing.T) {
			f := serve(t, Endpoint{Networks: loopback, TLS: mode, CertFile: pki.CertFile, KeyFile: pki.KeyFile})
			c := dial(t, f.addr, "", mode, pki.Client())
			if err := send(c, "Subject: tls\r\n\r\nhi\r\n"); err != nil {
				t.Fatal(err)
			}
			if len(f.queued) != 1 {
				t.Fatalf("%d messages queued", len(f.queued))
			}
			body := f.records(t)[f.queued[0].ID]
			for _, want := range []string{"\r\n\t(using TLSv1.3 with cipher TLS_", "\r\n\tby relay.test (Outbox) with ESMTPS id "} {
				if !strings.Contains(body, want) {
					t.Errorf("Received: header lacks %q:\n%s", want, body)
				}
			}
			if f.queued[0].Origin.User != "" {
				t.Errorf("Origin.User = %q without AUTH", f.queued[0].Origin.User)
			}
		})
	}
}

// Clients limited to TLS 1.1 get no session.
func TestTLSMinVersion(t *testing.T) {
	pki := testutil.NewPKI(t, "Outbox test CA")
	f := serve(t, Endpoint{Networks: loopback, TLS: TLSImplicit, CertFile: pki.CertFile, KeyFile: pki.KeyFile})
	cfg := pki.Client()
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	conn, err := tls.Dial("tcp", f.addr, cfg)
	if err == nil {
		conn.Close()
		t.Fatal("TLS 1.1 handshake succeeded")
	}
}

// A certificate or key that cannot be used fails Serve at once, with an
// error naming the file at fault.
func TestBadCertificate(t *testing.T) {
	pki, other := testutil.NewPKI(t, "Outbox test CA"), testutil.NewPKI(t, "Outbox test CA")
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	testutil.WriteFile(t, garbage, []byte("not a certificate\n"), 0o644)
	for _, tt := range []struct {
		name, cert, key, want string
	}{
		{"missing cert", filepath.Join(dir, "nonexistent.pem"), pki.KeyFile, filepath.Join(dir, "nonexistent.pem")},
		{"garbage cert", garbage, pki.KeyFile, garbage + ": no PEM \"CERTIFICATE\""},
		{"garbage key", pki.CertFile, garbage, garbage + ": no PEM private key"},
		{"cert is a key", pki.KeyFile, pki.KeyFile, pki.KeyFile + ": no PEM \"CERTIFICATE\""},
		{"key of another certificate", pki.CertFile, other.KeyFile, "TLS certificate " + pki.CertFile + " with key " + other.KeyFile + ": tls: private key does not match public key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, mode := range []TLSMode{TLSStartTLS, TLSImplicit} {
				sp, err := spool.Open(t.TempDir(), nil)
				if err != nil {
					t.Fatal(err)
				}
				srv := New(sp, Options{Hostname: "relay.test"}, nil, slog.New(slog.DiscardHandler))
				ep := Endpoint{Address: "127.0.0.1:0", Networks: loopback, TLS: mode, CertFile: tt.cert, KeyFile: tt.key}
				l, err := Listen(ep)
				if err != nil {
					t.Fatal(err)
				}
				err = srv.Serve(context.Background(), l, ep)
				l.Close()
				if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "listener 127.0.0.1:0: ") {
					t.Errorf("%s: Serve: %v, want an error containing %q", mode, err, tt.want)
				}
			}
		})
	}
}

// Reconfigure puts a renewed certificate in service for new handshakes,
// and refuses (changing nothing) a certificate it cannot read.
func TestReconfigureCertificate(t *testing.T) {
	pki, renewed := testutil.NewPKI(t, "Outbox test CA"), testutil.NewPKI(t, "Outbox test CA")
	sp, err := spool.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := New(sp, Options{Hostname: "relay.test"}, nil, slog.New(slog.DiscardHandler))
	ep := Endpoint{Address: "127.0.0.1:0", Networks: loopback, TLS: TLSImplicit, CertFile: pki.CertFile, KeyFile: pki.KeyFile}
	l, err := Listen(ep)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx, l, ep) }()
	defer func() { cancel(); <-done }()

	served := func() *x509.Certificate {
		t.Helper()
		cfg := pki.Client()
		cfg.InsecureSkipVerify = true
		c, err := tls.Dial("tcp", l.Addr().String(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		bufio.NewReader(c).ReadString('\n') // the greeting
		return c.ConnectionState().PeerCertificates[0]
	}
	if !served().Equal(pki.Leaf) {
		t.Fatal("not serving the configured certificate")
	}
	bad := ep
	bad.CertFile = filepath.Join(t.TempDir(), "missing.pem")
	if err := srv.Reconfigure(Options{Hostname: "relay.test"}, []Endpoint{bad}); err == nil {
		t.Error("Reconfigure accepted a missing certificate")
	}
	if !served().Equal(pki.Leaf) {
		t.Fatal("a failed Reconfigure changed the certificate")
	}
	ep.CertFile, ep.KeyFile = renewed.CertFile, renewed.KeyFile
	if err := srv.Reconfigure(Options{Hostname: "relay.test"}, []Endpoint{ep}); err != nil {
		t.Fatal(err)
	}
	if !served().Equal(renewed.Leaf) {
		t.Error("still serving the old certificate after Reconfigure")
	}
}

var discard = slog.New(slog.DiscardHandler)

func spoolForTest(t *testing.T) (*spool.Spool, error) { return spool.Open(t.TempDir(), nil) }
