package upstream

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxmta/outbox/internal/testutil"
)

// TestAuthRefusedHoldsMail: after a 535 the client stops logging in for a
// while and defers messages with the same error; it says once, loudly,
// what to fix, and once that mail flows again when the password is fixed.
func TestAuthRefusedHoldsMail(t *testing.T) {
	p := testutil.NewPKI(t, "Outbox Test CA")
	pwFile := filepath.Join(t.TempDir(), "pw")
	testutil.WriteFile(t, pwFile, []byte("wrong\n"), 0o600)
	be := &backend{users: map[string]string{"user@example.org": "s3cret"}}
	host, port := startServer(t, be, serverOpts{tls: "starttls", pki: p})
	cfg := reuseCfg(host, port)
	cfg.TLS, cfg.CAFile, cfg.TLSServerName = "starttls", p.CAFile, "localhost"
	cfg.Auth, cfg.Username, cfg.PasswordFile = "plain", "user@example.org", pwFile
	logs := &testutil.SyncBuffer{}
	c := New(cfg, "client.test", testLogger(logs))
	defer c.Close()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	c.auth.now = func() time.Time { return now }

	refused := func(i int, wantTries int) {
		t.Helper()
		_, err := deliver(t, c, msg(i))
		e := asError(t, err)
		if e.Op != "auth" || e.Code != 535 || !e.Temporary {
			t.Errorf("message %d: error %+v, want the temporary 535", i, e)
		}
		if _, _, tries, _ := be.snapshot(); tries != wantTries {
			t.Errorf("message %d: server saw %d AUTH, want %d", i, tries, wantTries)
		}
	}
	errorLines := func() int { return strings.Count(logs.String(), "level=ERROR") }

	refused(0, 1)
	refused(1, 1) // held: no login attempt
	refused(2, 1)
	if _, err := deliver(t, c, msg(3)); !strings.Contains(err.Error(), "not retried before 12:01:00") {
		t.Errorf("held error %q does not say until when", err)
	}
	if n := errorLines(); n != 1 || !strings.Contains(logs.String(), "password_file "+pwFile) {
		t.Errorf("%d error lines, want one naming password_file:\n%s", n, logs)
	}

	now = now.Add(authHoldOff)
	refused(4, 2) // one new try after the hold-off
	refused(5, 2)
	if n := errorLines(); n != 1 {
		t.Errorf("%d error lines after a second refusal, want still one:\n%s", n, logs)
	}

	testutil.WriteFile(t, pwFile, []byte("s3cret\n"), 0o600)
	now = now.Add(authHoldOff)
	mustDeliver(t, c, msg(6))
	mustDeliver(t, c, msg(7))
	if !strings.Contains(logs.String(), "accepts the credentials again") {
		t.Errorf("no log line on recovery:\n%s", logs)
	}
	if txns, _, tries, _ := be.snapshot(); len(txns) != 2 || tries != 3 {
		t.Errorf("server has %d messages after %d AUTH, want 2 after 3", len(txns), tries)
	}
}

// TestAuthLocalProblemNotHeld: a failure that never reached the server
// with credentials (here an unreadable password_file) is tried again at
// every attempt, so that a fix takes effect at once.
func TestAuthLocalProblemNotHeld(t *testing.T) {
	p := testutil.NewPKI(t, "Outbox Test CA")
	pwFile := filepath.Join(t.TempDir(), "pw")
	be := &backend{users: map[string]string{"user@example.org": "s3cret"}}
	host, port := startServer(t, be, serverOpts{tls: "starttls", pki: p})
	cfg := testCfg(host, port, "starttls")
	cfg.CAFile, cfg.TLSServerName = p.CAFile, "localhost"
	cfg.Auth, cfg.Username, cfg.PasswordFile = "plain", "user@example.org", pwFile
	c := New(cfg, "client.test", nil)
	defer c.Close()
	if _, err := deliver(t, c, msg(0)); asError(t, err).Op != "credentials" {
		t.Fatalf("error = %v, want a credentials error", err)
	}
	if err := os.WriteFile(pwFile, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustDeliver(t, c, msg(1))
}
