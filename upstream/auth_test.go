package upstream

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outboxmta/outbox/internal/testutil"
)

func testLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestAuth(t *testing.T) {
	p := testutil.NewPKI(t, "Outbox Test CA")
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		tls       string // client mode; the server matches it
		auth      string
		mechs     []string // server's; nil: PLAIN LOGIN CRAM-MD5
		password  string
		pwFile    string
		plainOK   bool // allow_plaintext_auth
		wantMech  string
		wantErr   string // Error.Op
		wantText  string
		wantTries int // AUTH commands the server saw
	}{
		{name: "plain", tls: "starttls", auth: "plain", password: "s3cret", wantMech: "PLAIN", wantTries: 1},
		{name: "login", tls: "starttls", auth: "login", password: "s3cret", wantMech: "LOGIN", wantTries: 1},
		{name: "cram-md5", tls: "implicit", auth: "cram-md5", password: "s3cret", wantMech: "CRAM-MD5", wantTries: 1},
		{name: "auto on TLS prefers PLAIN", tls: "starttls", auth: "auto", password: "s3cret", wantMech: "PLAIN", wantTries: 1},
		{name: "auto falls back to LOGIN", tls: "starttls", auth: "auto", mechs: []string{"LOGIN"}, password: "s3cret", wantMech: "LOGIN", wantTries: 1},
		{name: "auto in clear prefers CRAM-MD5", tls: "none", auth: "auto", plainOK: true, password: "s3cret", wantMech: "CRAM-MD5", wantTries: 1},
		{name: "password_file", tls: "starttls", auth: "plain", pwFile: pwFile, wantMech: "PLAIN", wantTries: 1},
		{name: "wrong password", tls: "starttls", auth: "plain", password: "wrong", wantErr: "auth", wantText: "credentials invalid", wantTries: 1},
		{name: "wrong password login", tls: "starttls", auth: "login", password: "wrong", wantErr: "auth", wantText: "credentials invalid", wantTries: 1},
		{name: "mechanism not offered", tls: "starttls", auth: "cram-md5", mechs: []string{"PLAIN"}, password: "s3cret", wantErr: "auth", wantText: "server offers PLAIN"},
		{name: "plaintext refused", tls: "none", auth: "plain", password: "s3cret", wantErr: "auth", wantText: "unencrypted"},
		{name: "plaintext allowed", tls: "none", auth: "plain", plainOK: true, password: "s3cret", wantMech: "PLAIN", wantTries: 1},
		{name: "no password", tls: "starttls", auth: "plain", wantErr: "credentials", wantText: "no password"},
		{name: "unreadable password_file", tls: "starttls", auth: "plain", pwFile: "/nonexistent/pw", wantErr: "credentials", wantText: "password_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := &backend{users: map[string]string{"user@example.org": "s3cret"}, mechs: tt.mechs}
			srv := tt.tls
			if srv == "none" {
				srv = ""
			}
			host, port := startServer(t, be, serverOpts{tls: srv, pki: p, insecureAuth: true})
			cfg := testCfg(host, port, tt.tls)
			cfg.CAFile = p.CAFile
			cfg.Auth, cfg.Username, cfg.Password, cfg.PasswordFile = tt.auth, "user@example.org", tt.password, tt.pwFile
			cfg.AllowPlaintextAuth = tt.plainOK
			var trace bytes.Buffer
			c := New(cfg, "client.test", nil)
			c.Trace = &trace
			res, err := deliver(t, c, &Message{From: "a@example.org", Recipients: []string{"b@example.net"}, Body: strings.NewReader("x")})
			txns, mails, tries, _ := be.snapshot()
			if tries != tt.wantTries {
				t.Errorf("server saw %d AUTH attempts, want %d", tries, tt.wantTries)
			}
			if tt.wantErr != "" {
				e := asError(t, err)
				if e.Op != tt.wantErr || !e.Temporary || !strings.Contains(e.Text, tt.wantText) {
					t.Errorf("error = %+v, want temporary %s error containing %q", e, tt.wantErr, tt.wantText)
				}
				if mails != 0 {
					t.Errorf("MAIL sent after auth failure")
				}
				if strings.Contains(e.Error(), "s3cret") || strings.Contains(e.Error(), "wrong") {
					t.Errorf("error text contains the password: %v", e)
				}
				return
			}
			if err != nil || res[0].Status != Delivered {
				t.Fatalf("Deliver = %+v, %v\n%s", res, err, trace.String())
			}
			if txns[0].user != "user@example.org" {
				t.Errorf("server session user = %q", txns[0].user)
			}
			if !strings.Contains(trace.String(), "C: AUTH "+tt.wantMech) {
				t.Errorf("trace does not show AUTH %s:\n%s", tt.wantMech, trace.String())
			}
		})
	}
}

func TestChooseMech(t *testing.T) {
	tests := []struct {
		auth      string
		offered   string
		encrypted bool
		want      string
		wantErr   string
	}{
		{"auto", "LOGIN PLAIN CRAM-MD5", true, "PLAIN", ""},
		{"auto", "login cram-md5", true, "LOGIN", ""},
		{"auto", "CRAM-MD5", true, "CRAM-MD5", ""},
		{"auto", "PLAIN LOGIN CRAM-MD5", false, "CRAM-MD5", ""},
		{"auto", "PLAIN LOGIN", false, "PLAIN", ""},
		{"plain", "PLAIN", true, "PLAIN", ""},
		{"login", "PLAIN", true, "", "server offers PLAIN"},
		{"auto", "SCRAM-SHA-256 XOAUTH2", true, "", "server offers SCRAM-SHA-256 XOAUTH2"},
		{"auto", "", true, "", "does not offer AUTH"},
		{"xoauth2", "PLAIN xoauth2 OAUTHBEARER", true, "XOAUTH2", ""},
		{"oauthbearer", "PLAIN XOAUTH2 OAUTHBEARER", true, "OAUTHBEARER", ""},
		{"xoauth2", "PLAIN LOGIN", true, "", "needs XOAUTH2"},
	}
	for _, tt := range tests {
		got, err := chooseMech(tt.auth, strings.Fields(tt.offered), tt.encrypted)
		if got != tt.want || (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("chooseMech(%q, %q, %v) = %q, %v; want %q, %q", tt.auth, tt.offered, tt.encrypted, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestCRAMMD5Vector(t *testing.T) {
	// RFC 2195 section 2.
	c := &cramMD5Client{username: "tim", password: "tanstaaftanstaaf"}
	resp, err := c.Next([]byte("<1896.697170952@postoffice.reston.mci.net>"))
	if err != nil || string(resp) != "tim b913a602c7eda7a495b4e6e7334d3890" {
		t.Errorf("CRAM-MD5 response = %q, %v", resp, err)
	}
}

func TestTraceRedactsSecrets(t *testing.T) {
	p := testutil.NewPKI(t, "Outbox Test CA")
	const user, pass = "user@example.org", "Hunter2-very-secret"
	secrets := []string{
		pass,
		base64.StdEncoding.EncodeToString([]byte(pass)),
		base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass)),
		base64.StdEncoding.EncodeToString([]byte(user)), // LOGIN sends it encoded too
	}
	for _, mech := range []string{"plain", "login", "cram-md5"} {
		t.Run(mech, func(t *testing.T) {
			be := &backend{users: map[string]string{user: pass}}
			host, port := startServer(t, be, serverOpts{tls: "starttls", pki: p})
			cfg := testCfg(host, port, "starttls")
			cfg.CAFile, cfg.Auth, cfg.Username, cfg.Password = p.CAFile, mech, user, pass
			var trace, logs bytes.Buffer
			c := New(cfg, "client.test", testLogger(&logs))
			c.Trace = &trace
			body := "Subject: private\r\n\r\nthe body is not traced\r\n"
			res, err := c.Deliver(context.Background(), &Message{From: "a@example.org", Recipients: []string{"b@example.net"}, Body: strings.NewReader(body)})
			if err != nil || res[0].Status != Delivered {
				t.Fatalf("Deliver = %+v, %v", res, err)
			}
			tr := trace.String()
			for _, s := range secrets {
				if strings.Contains(tr, s) || strings.Contains(logs.String(), s) {
					t.Errorf("trace or log contains secret %q:\n%s\n%s", s, tr, logs.String())
				}
			}
			for _, want := range []string{"C: STARTTLS", "* TLS TLS 1.3", "C: EHLO client.test", "<redacted>", "S: 235", "C: MAIL FROM:<a@example.org>", "C: <message data, ", "C: .", "C: QUIT"} {
				if !strings.Contains(tr, want) {
					t.Errorf("trace lacks %q:\n%s", want, tr)
				}
			}
			if strings.Contains(tr, "not traced") {
				t.Errorf("trace contains the message body:\n%s", tr)
			}
		})
	}
}
