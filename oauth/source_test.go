package oauth

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"log/slog"

	"github.com/outboxmta/outbox/config"
	"github.com/outboxmta/outbox/internal/oauthtest"
	"github.com/outboxmta/outbox/internal/testutil"
	"github.com/outboxmta/outbox/upstream"
)

// setup returns an IdP, an upstream config using it with a refresh token
// file holding a valid token, and a Source with its log.
func setup(t *testing.T, provider string) (*oauthtest.IdP, config.Upstream, *testutil.SyncBuffer) {
	t.Helper()
	idp := oauthtest.NewIdP(t)
	dir := t.TempDir()
	rtFile := filepath.Join(dir, "refresh.token")
	testutil.WriteFile(t, rtFile, []byte(idp.NewRefreshToken()+"\n"), 0o600)
	u := config.Upstream{Name: "m365", Auth: "xoauth2", Username: "app@example.com", OAuth2: config.OAuth2{
		Provider: provider, ClientID: idp.ClientID, TokenURL: idp.URL + "/token",
		RefreshTokenFile: rtFile, Scopes: []string{"https://outlook.office.com/SMTP.Send", "offline_access"},
	}}
	return idp, u, &testutil.SyncBuffer{}
}

func logger(w *testutil.SyncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// noTokens fails the test if any token the IdP issued is in text.
func noTokens(t *testing.T, idp *oauthtest.IdP, text string) {
	t.Helper()
	for _, tok := range idp.Tokens() {
		if strings.Contains(text, tok) {
			t.Errorf("token %s appears in:\n%s", tok, text)
		}
	}
}

func TestRefreshBeforeExpiry(t *testing.T) {
	idp, u, logs := setup(t, "microsoft")
	idp.Expiry = time.Second
	s := New(u, logger(logs))
	ctx := context.Background()
	seen := map[string]bool{}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		tok, err := s.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !idp.ValidFor(tok, 200*time.Millisecond) {
			t.Fatalf("Token returned a token that is (about to be) expired")
		}
		seen[tok] = true
		time.Sleep(50 * time.Millisecond)
	}
	// Cached, yet replaced before expiry: roughly one per half second.
	if n, reqs := len(seen), idp.Requests(oauthtest.GrantRefresh); n < 3 || reqs != n || reqs > 20 {
		t.Errorf("%d distinct tokens from %d requests over 3s with 1s expiry; want a few, each requested once", n, reqs)
	}
	if got := idp.Scopes(); !slices.Equal(got, u.OAuth2.Scopes) {
		t.Errorf("refresh request scope = %q, want %q (Microsoft wants it)", got, u.OAuth2.Scopes)
	}
	noTokens(t, idp, logs.String())
}

func TestGoogleRefreshWithoutScope(t *testing.T) {
	idp, u, logs := setup(t, "google")
	if _, err := New(u, logger(logs)).Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := idp.Scopes(); len(got) != 0 {
		t.Errorf("refresh request scope = %q, want none", got)
	}
}

func TestRotationSurvivesRestart(t *testing.T) {
	idp, u, logs := setup(t, "microsoft")
	idp.Rotate, idp.Expiry = true, time.Second
	rtFile := u.OAuth2.RefreshTokenFile
	// Group-readable by our own group, as root:outbox 0640 is for the daemon.
	if err := os.Chmod(rtFile, 0o640); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(rtFile)
	s := New(u, logger(logs))
	if _, err := s.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	now, _ := os.ReadFile(rtFile)
	if string(now) == string(old) || !idp.ValidRefresh(strings.TrimSpace(string(now))) || idp.ValidRefresh(strings.TrimSpace(string(old))) {
		t.Fatalf("refresh token file holds %q (was %q): want the rotated, valid one", now, old)
	}
	if fi, _ := os.Stat(rtFile); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode after rotation = %04o, want 0640 as before", fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(rtFile), ".*tmp*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	// A restart: a new Source reads the file.
	s2 := New(u, logger(logs))
	if _, err := s2.Token(context.Background()); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	// And the first one keeps working, reading what the second stored.
	time.Sleep(600 * time.Millisecond)
	if _, err := s.Token(context.Background()); err != nil {
		t.Fatalf("first source after the second rotated: %v", err)
	}
	noTokens(t, idp, logs.String())
}

func TestInvalidGrant(t *testing.T) {
	idp, u, logs := setup(t, "microsoft")
	s := New(u, logger(logs))
	idp.RevokeAll()
	for range 3 {
		_, err := s.Token(context.Background())
		if err == nil || !strings.Contains(err.Error(), "invalid_grant") || !strings.Contains(err.Error(), "outbox oauth2 authorize m365") {
			t.Fatalf("Token error = %v, want invalid_grant and the fix", err)
		}
	}
	if n := idp.Requests(oauthtest.GrantRefresh); n != 1 {
		t.Errorf("%d token requests with the refused token, want 1", n)
	}
	if ok, err := s.State(); ok || err == nil {
		t.Errorf("State = %v, %v; want not ok", ok, err)
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d error lines, want one loud line:\n%s", n, logs)
	}
	// The administrator authorizes again: the new token is picked up.
	testutil.WriteFile(t, u.OAuth2.RefreshTokenFile, []byte(idp.NewRefreshToken()), 0o600)
	if _, err := s.Token(context.Background()); err != nil {
		t.Fatalf("after a new refresh token: %v", err)
	}
	if ok, err := s.State(); !ok || err != nil {
		t.Errorf("State = %v, %v; want ok", ok, err)
	}
	if !strings.Contains(logs.String(), "flows again") {
		t.Errorf("no recovery line:\n%s", logs)
	}
	noTokens(t, idp, logs.String())
}

func TestEndpointDown(t *testing.T) {
	idp, u, logs := setup(t, "generic")
	s := New(u, logger(logs))
	idp.Lock()
	idp.Down = true
	idp.Unlock()
	for range 2 {
		if _, err := s.Token(context.Background()); err == nil || !strings.Contains(err.Error(), "503") {
			t.Fatalf("Token error = %v, want the 503", err)
		}
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings, want one:\n%s", n, logs)
	}
	idp.Lock()
	idp.Down = false
	idp.Unlock()
	if _, err := s.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Unreachable: nothing listens there.
	u.OAuth2.TokenURL = "http://127.0.0.1:1/token"
	if _, err := New(u, nil).Token(context.Background()); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("Token error = %v, want unreachable", err)
	}
}

func TestClientCredentials(t *testing.T) {
	idp, u, logs := setup(t, "microsoft")
	idp.ClientSecret = "s3cret-client"
	secret := filepath.Join(t.TempDir(), "client.secret")
	testutil.WriteFile(t, secret, []byte("s3cret-client\n"), 0o600)
	u.OAuth2.RefreshTokenFile, u.OAuth2.ClientSecretFile = "", secret
	u.OAuth2.Scopes = []string{config.MicrosoftAppScope}
	s := New(u, logger(logs))
	tok, err := s.Token(context.Background())
	if err != nil || !idp.ValidAccess(tok) {
		t.Fatalf("Token = valid %v, %v", idp.ValidAccess(tok), err)
	}
	if got := idp.Scopes(); !slices.Equal(got, u.OAuth2.Scopes) {
		t.Errorf("scope = %q, want %q", got, u.OAuth2.Scopes)
	}
	testutil.WriteFile(t, secret, []byte("expired-secret\n"), 0o600)
	s = New(u, logger(logs))
	_, err = s.Token(context.Background())
	if err == nil || !strings.Contains(err.Error(), "invalid_client") || !strings.Contains(err.Error(), "admin consent") {
		t.Errorf("Token error = %v, want invalid_client and what to check", err)
	}
	if strings.Contains(err.Error()+logs.String(), "s3cret-client") || strings.Contains(err.Error()+logs.String(), "expired-secret") {
		t.Errorf("secret in error or log")
	}
	noTokens(t, idp, logs.String())
}

// The mode rules are internal/secret's; here, that they apply and that
// an empty file is refused.
func TestReadSecret(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	testutil.WriteFile(t, path, []byte(" x\n"), 0o600)
	if s, err := readSecret("client_secret_file", path); s != "x" || err != nil {
		t.Errorf("0600: readSecret = %q, %v", s, err)
	}
	os.Chmod(path, 0o644)
	if _, err := readSecret("client_secret_file", path); err == nil || !strings.Contains(err.Error(), "client_secret_file "+path+" is accessible to every user") {
		t.Errorf("0644: error = %v", err)
	}
	testutil.WriteFile(t, path, []byte("\n"), 0o600)
	os.Chmod(path, 0o600)
	if _, err := readSecret("refresh_token_file", path); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty file: error = %v", err)
	}
}

// TestLongQueueRun delivers through the upstream client with short-lived
// tokens to a server that refuses expired ones: every connection
// authenticates, and the source refreshes in between.
func TestLongQueueRun(t *testing.T) {
	idp, u, logs := setup(t, "microsoft")
	idp.Expiry = time.Second
	idp.Rotate = true
	p := testutil.NewPKI(t, "Outbox Test CA")
	// The server's clock runs 200ms ahead: only an early refresh copes.
	mb := &oauthtest.Mailbox{User: u.Username, Valid: func(tok string) bool { return idp.ValidFor(tok, 200*time.Millisecond) }}
	u.Host, u.Port, u.TLS, u.CAFile, u.TLSServerName = "127.0.0.1", mb.Start(t, p.ServerTLS), "starttls", p.CAFile, "127.0.0.1"
	c := upstream.New(u, "client.test", logger(logs))
	c.Tokens = New(u, logger(logs))
	deadline := time.Now().Add(3 * time.Second)
	n := 0
	for ; time.Now().Before(deadline); n++ {
		res, err := c.Deliver(context.Background(), &upstream.Message{ID: strconv.Itoa(n), From: "app@example.com",
			Recipients: []string{"x@example.net"}, Body: strings.NewReader("Subject: hi\r\n\r\nhi\r\n")})
		if err != nil || res[0].Status != upstream.Delivered {
			t.Fatalf("message %d: %+v, %v", n, res, err)
		}
		time.Sleep(30 * time.Millisecond)
	}
	msgs, authOK, authFail := mb.Counts()
	if msgs != n || authOK != n || authFail != 0 {
		t.Errorf("server: %d messages, %d AUTH ok, %d refused; want %d, %d, 0", msgs, authOK, authFail, n, n)
	}
	if r := idp.Requests(oauthtest.GrantRefresh); r < 3 || r >= n {
		t.Errorf("%d token requests for %d messages over 3s with 1s tokens", r, n)
	}
	noTokens(t, idp, logs.String())
}
