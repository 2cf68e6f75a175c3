package upstream

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-sasl"

	"github.com/outboxmta/outbox/internal/testutil"
)

// tokens is a TokenSource for tests.
type tokens struct {
	mu          sync.Mutex
	token       string
	err         error
	calls       int
	invalidated []string
}

func (t *tokens) Token(context.Context) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls++
	return t.token, t.err
}

func (t *tokens) Invalidate(token string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.invalidated = append(t.invalidated, token)
}

func TestBearerAuth(t *testing.T) {
	p := testutil.NewPKI(t, "Outbox Test CA")
	const user = "user@example.org"
	var valid sync.Map // token → true
	valid.Store("tok-1", true)
	valid.Store("tok-2", true)
	tokenFile := filepath.Join(t.TempDir(), "token")

	tests := []struct {
		name      string
		auth      string
		password  string
		command   []string
		file      string // written to tokenFile before each of the two attempts
		file2     string
		tokens    *tokens
		wantErr   string // Error.Op
		wantText  string
		secret    string // must appear in neither trace nor error
		wantCalls int    // of tokens
	}{
		{name: "xoauth2 from password", auth: "xoauth2", password: "tok-1", secret: "tok-1"},
		{name: "oauthbearer from password_command", auth: "oauthbearer", command: []string{"echo", "tok-2"}, secret: "tok-2"},
		{name: "xoauth2 file reread per connection", auth: "xoauth2", file: "tok-1\n", file2: "tok-2\n", secret: "tok-2"},
		{name: "xoauth2 token source", auth: "xoauth2", tokens: &tokens{token: "tok-1"}, wantCalls: 2, secret: "tok-1"},
		{name: "xoauth2 refused", auth: "xoauth2", password: "expired-token", wantErr: "auth", wantText: "535 5.7.8 Username and Password not accepted (token status 401, scope https://mail.google.com/)", secret: "expired-token"},
		{name: "oauthbearer refused", auth: "oauthbearer", password: "expired-token", wantErr: "auth", wantText: "token status 401", secret: "expired-token"},
		{name: "refused token invalidated", auth: "xoauth2", tokens: &tokens{token: "expired-token"}, wantErr: "auth", wantText: "535", secret: "expired-token", wantCalls: 1},
		{name: "token source fails", auth: "oauthbearer", tokens: &tokens{err: errors.New("oauth2: token endpoint unreachable")}, wantErr: "credentials", wantText: "unreachable", wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := &backend{users: map[string]string{}, mechs: []string{"PLAIN", "XOAUTH2", sasl.OAuthBearer},
				bearer: func(u, tok string) bool { _, ok := valid.Load(tok); return ok && u == user }}
			host, port := startServer(t, be, serverOpts{tls: "starttls", pki: p})
			cfg := testCfg(host, port, "starttls")
			cfg.CAFile, cfg.Auth, cfg.Username = p.CAFile, tt.auth, user
			cfg.Password, cfg.PasswordCommand = tt.password, tt.command
			if tt.file != "" {
				cfg.PasswordFile = tokenFile
			}
			var trace, logs bytes.Buffer
			c := New(cfg, "client.test", testLogger(&logs))
			c.Trace = &trace
			if tt.tokens != nil {
				c.Tokens = tt.tokens
			}
			attempts := 1
			if tt.wantErr == "" {
				attempts = 2
			}
			for i := range attempts {
				if f := []string{tt.file, tt.file2}[i]; f != "" {
					if err := os.WriteFile(tokenFile, []byte(f), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				res, err := c.Deliver(context.Background(), &Message{From: "a@example.org", Recipients: []string{"b@example.net"}, Body: strings.NewReader("x")})
				if tt.wantErr != "" {
					e := asError(t, err)
					if e.Op != tt.wantErr || !e.Temporary || !strings.Contains(e.Error(), tt.wantText) {
						t.Errorf("error = %+v, want temporary %s error containing %q", e, tt.wantErr, tt.wantText)
					}
					if tt.secret != "" && strings.Contains(e.Error(), tt.secret) {
						t.Errorf("error contains the token: %v", e)
					}
					break
				}
				if err != nil || res[0].Status != Delivered {
					t.Fatalf("attempt %d: Deliver = %+v, %v\n%s", i+1, res, err, trace.String())
				}
			}
			txns, mails, _, _ := be.snapshot()
			if tt.wantErr == "" && (len(txns) != 2 || txns[1].user != user) {
				t.Errorf("server got %d transactions (%+v), want 2 as %s", len(txns), txns, user)
			}
			if tt.wantErr != "" && mails != 0 {
				t.Errorf("MAIL sent after auth failure")
			}
			if tt.tokens != nil {
				if tt.tokens.calls != tt.wantCalls {
					t.Errorf("token source asked %d times, want %d", tt.tokens.calls, tt.wantCalls)
				}
				wantInv := tt.wantErr == "auth"
				if got := len(tt.tokens.invalidated) == 1 && tt.tokens.invalidated[0] == tt.tokens.token; got != wantInv {
					t.Errorf("invalidated %q, want the token invalidated: %v", tt.tokens.invalidated, wantInv)
				}
			}
			tr := trace.String()
			if !strings.Contains(tr, "C: AUTH "+strings.ToUpper(tt.auth)+" <redacted>") && tt.wantErr != "credentials" {
				t.Errorf("trace lacks the redacted AUTH line:\n%s", tr)
			}
			if tt.wantErr == "auth" && !strings.Contains(tr, "S: 334 ") {
				t.Errorf("trace lacks the error challenge:\n%s", tr)
			}
			for _, s := range []string{tt.secret, base64.StdEncoding.EncodeToString([]byte("user=" + user + "\x01auth=Bearer " + tt.secret + "\x01\x01"))} {
				if s != "" && (strings.Contains(tr, s) || strings.Contains(logs.String(), s)) {
					t.Errorf("trace or log contains the token:\n%s\n%s", tr, logs.String())
				}
			}
		})
	}
}

func TestBearerInitialResponse(t *testing.T) {
	for _, tt := range []struct{ mech, user, want string }{
		{"XOAUTH2", "someuser@example.com", "user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"},
		{"OAUTHBEARER", "user@example.com", "n,a=user@example.com,\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"},
		{"OAUTHBEARER", "a,b=c", "n,a=a=2Cb=3Dc,\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"},
	} {
		// The XOAUTH2 example is Google's; OAUTHBEARER's is RFC 7628 section 4.1 without host and port.
		mech, ir, err := saslClient(tt.mech, tt.user, "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg").Start()
		if mech != tt.mech || string(ir) != tt.want || err != nil {
			t.Errorf("%s Start = %q, %q, %v; want %q", tt.mech, mech, ir, err, tt.want)
		}
	}
}

func TestAuthHint(t *testing.T) {
	for _, tt := range []struct {
		code     int
		enhanced string
		text     string
		want     string
	}{
		{535, "5.7.139", "Authentication unsuccessful, basic authentication is disabled. [AM0PR01CA0123.eurprd01.prod.exchangelabs.com]", "switch to OAuth2"},
		{535, "5.7.3", "Authentication unsuccessful, Basic authentication is disabled", "switch to OAuth2"},
		{504, "5.7.30", "Basic authentication is not supported for Client Submission.", "switch to OAuth2"},
		{534, "5.7.9", "Application-specific password required. For more information, go to https://support.google.com/mail/?p=InvalidSecondFactor", "app password or OAuth2"},
		{535, "5.7.8", "Username and Password not accepted", ""},
		{454, "4.7.0", "basic authentication is disabled", ""},
	} {
		got := authHint(&Error{Code: tt.code, Enhanced: tt.enhanced, Text: tt.text})
		if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
			t.Errorf("authHint(%d %s %s) = %q, want %q", tt.code, tt.enhanced, tt.text, got, tt.want)
		}
	}
}
