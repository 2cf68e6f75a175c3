package upstream

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"

	"github.com/outboxmta/outbox/internal/testutil"
)

func TestTLSModes(t *testing.T) {
	p := testutil.NewPKI(t, "Outbox Test CA")
	tests := []struct {
		name       string
		server     string // serverOpts.tls
		client     string // config tls
		wantTLS    bool
		wantErrOp  string
		wantErrTxt string
	}{
		{name: "none", server: "", client: "none"},
		{name: "none ignores offered STARTTLS", server: "starttls", client: "none"},
		{name: "opportunistic without STARTTLS sends in clear", server: "", client: "opportunistic"},
		{name: "opportunistic with STARTTLS", server: "starttls", client: "opportunistic", wantTLS: true},
		{name: "starttls", server: "starttls", client: "starttls", wantTLS: true},
		{name: "implicit", server: "implicit", client: "implicit", wantTLS: true},
		{name: "starttls required but not offered", server: "", client: "starttls",
			wantErrOp: "starttls", wantErrTxt: "did not offer STARTTLS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := &backend{users: map[string]string{"user": "pw"}}
			host, port := startServer(t, be, serverOpts{tls: tt.server, pki: p, insecureAuth: true})
			cfg := testCfg(host, port, tt.client)
			cfg.CAFile = p.CAFile
			if tt.wantErrOp != "" {
				// Credentials configured: they must not be sent in clear.
				cfg.Auth, cfg.Username, cfg.Password, cfg.AllowPlaintextAuth = "plain", "user", "pw", true
			}
			var trace bytes.Buffer
			c := New(cfg, "client.test", nil)
			c.Trace = &trace
			res, err := deliver(t, c, &Message{From: "a@example.org", Recipients: []string{"b@example.net"}, Body: strings.NewReader("hello\r\n")})
			txns, mails, authTries, _ := be.snapshot()
			if tt.wantErrOp != "" {
				e := asError(t, err)
				if e.Op != tt.wantErrOp || !e.Temporary || !strings.Contains(e.Text, tt.wantErrTxt) {
					t.Errorf("error = %+v, want temporary %s error containing %q", e, tt.wantErrOp, tt.wantErrTxt)
				}
				if mails != 0 || authTries != 0 {
					t.Errorf("server saw %d MAIL and %d AUTH; want none", mails, authTries)
				}
				if s := trace.String(); strings.Contains(s, "C: AUTH") || strings.Contains(s, "C: MAIL") {
					t.Errorf("trace shows AUTH or MAIL:\n%s", s)
				}
				return
			}
			if err != nil {
				t.Fatalf("Deliver: %v\ntrace:\n%s", err, trace.String())
			}
			if res[0].Status != Delivered {
				t.Fatalf("result = %+v", res[0])
			}
			if len(txns) != 1 || txns[0].tls != tt.wantTLS {
				t.Errorf("server transaction TLS = %v, want %v", txns[0].tls, tt.wantTLS)
			}
		})
	}
}

func TestTLSVerification(t *testing.T) {
	good := testutil.NewPKI(t, "Right CA")
	other := testutil.NewPKI(t, "Wrong CA")
	tests := []struct {
		name       string
		mode       string
		caFile     string
		serverName string
		insecure   bool
		wantErr    bool
	}{
		{name: "starttls wrong CA", mode: "starttls", caFile: other.CAFile, wantErr: true},
		{name: "implicit wrong CA", mode: "implicit", caFile: other.CAFile, wantErr: true},
		{name: "opportunistic wrong CA", mode: "opportunistic", caFile: other.CAFile, wantErr: true},
		{name: "wrong server name", mode: "starttls", caFile: good.CAFile, serverName: "mail.example.com", wantErr: true},
		{name: "server name localhost", mode: "starttls", caFile: good.CAFile, serverName: "localhost"},
		{name: "insecure skip verify", mode: "starttls", caFile: other.CAFile, insecure: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := &backend{}
			srvMode := tt.mode
			if srvMode == "opportunistic" {
				srvMode = "starttls"
			}
			host, port := startServer(t, be, serverOpts{tls: srvMode, pki: good})
			cfg := testCfg(host, port, tt.mode)
			cfg.CAFile, cfg.TLSServerName, cfg.InsecureSkipVerify = tt.caFile, tt.serverName, tt.insecure
			var logs bytes.Buffer
			c := New(cfg, "client.test", testLogger(&logs))
			_, err := deliver(t, c, &Message{From: "a@example.org", Recipients: []string{"b@example.net"}, Body: strings.NewReader("x")})
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Deliver: %v", err)
				}
				if tt.insecure && !strings.Contains(logs.String(), "insecure_skip_verify") {
					t.Errorf("no warning logged for insecure_skip_verify; logs:\n%s", logs.String())
				}
				return
			}
			e := asError(t, err)
			var cve *tls.CertificateVerificationError
			if !e.Temporary || !errors.As(err, &cve) || !strings.Contains(e.Text, "certificate verification failed") {
				t.Errorf("error = %+v, want temporary certificate verification error", e)
			}
			if _, mails, _, _ := be.snapshot(); mails != 0 {
				t.Errorf("MAIL sent despite TLS failure")
			}
		})
	}
}

func TestTLSConfigError(t *testing.T) {
	cfg := testCfg("127.0.0.1", 1, "starttls")
	cfg.CAFile = "/nonexistent/ca.pem"
	_, err := New(cfg, "client.test", nil).Deliver(context.Background(), &Message{Recipients: []string{"b@example.net"}})
	if e := asError(t, err); e.Op != "tls-config" || !e.Temporary || !strings.Contains(e.Text, "ca_file") {
		t.Errorf("error = %+v, want temporary tls-config error about ca_file", e)
	}
}

func TestProbe(t *testing.T) {
	p := testutil.NewPKI(t, "Outbox Test CA")
	be := &backend{users: map[string]string{"user": "pw"}}
	host, port := startServer(t, be, serverOpts{tls: "starttls", pki: p})
	cfg := testCfg(host, port, "starttls")
	cfg.CAFile, cfg.Auth, cfg.Username, cfg.Password = p.CAFile, "auto", "user", "pw"
	res, err := New(cfg, "client.test", nil).Probe(context.Background())
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if !res.TLS || res.TLSVersion != "TLS 1.3" || res.CipherSuite == "" || !res.Verified ||
		res.PeerSubject != "CN=localhost" || res.PeerIssuer != "CN=Outbox Test CA" || res.Address == "" {
		t.Errorf("TLS part of %+v is wrong", res)
	}
	if res.AuthMechanism != "PLAIN" {
		t.Errorf("AuthMechanism = %q, want PLAIN", res.AuthMechanism)
	}
	if _, ok := res.Extensions["8BITMIME"]; !ok || res.Extensions["SIZE"] != "1048576" || res.Extensions["AUTH"] == "" {
		t.Errorf("Extensions = %v", res.Extensions)
	}
	if _, ok := res.Extensions["STARTTLS"]; ok {
		t.Errorf("Extensions %v are from before STARTTLS", res.Extensions)
	}
	if _, mails, _, _ := be.snapshot(); mails != 0 {
		t.Errorf("Probe sent MAIL")
	}

	// With verification off, Probe still reports what it would have said.
	cfg.CAFile, cfg.InsecureSkipVerify = testutil.NewPKI(t, "Other CA").CAFile, true
	res, err = New(cfg, "client.test", nil).Probe(context.Background())
	if err != nil {
		t.Fatalf("Probe insecure: %v", err)
	}
	if res.Verified || res.VerifyError == "" {
		t.Errorf("insecure Probe: Verified %v, VerifyError %q; want false and a reason", res.Verified, res.VerifyError)
	}

	// On AUTH failure the TLS details are still reported.
	cfg.Password = "wrong"
	res, err = New(cfg, "client.test", nil).Probe(context.Background())
	if e := asError(t, err); e.Op != "auth" || !res.TLS || res.AuthMechanism != "" {
		t.Errorf("Probe with wrong password = %+v, %v", res, err)
	}
}
