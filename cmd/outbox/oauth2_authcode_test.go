package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxmta/outbox/internal/oauthtest"
	"github.com/outboxmta/outbox/internal/testutil"
)

// authcodeRun is a running `outbox oauth2 authorize` in the authorization
// code flow, and the authorization URL it printed.
type authcodeRun struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	out     *testutil.SyncBuffer
	authURL *url.URL
}

// startAuthcode starts `outbox oauth2 authorize NAME` and waits for the
// authorization URL at idp.
func startAuthcode(t *testing.T, config, name string, idp *oauthtest.IdP, flags ...string) *authcodeRun {
	t.Helper()
	args := append([]string{"oauth2", "authorize", "--config", config}, flags...)
	r := &authcodeRun{cmd: dieWithTest(exec.Command(filepath.Join(bin, "outbox"), append(args, name)...)), out: &testutil.SyncBuffer{}}
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	var err error
	if r.stdin, err = r.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			r.cmd.Process.Kill()
			r.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("outbox oauth2 authorize output:\n%s", r.out)
		}
	})
	waitFor(t, "the authorization URL", func() bool {
		for _, f := range strings.Fields(r.out.String()) {
			if strings.HasPrefix(f, idp.URL+"/auth?") {
				r.authURL, err = url.Parse(f)
				return err == nil
			}
		}
		return false
	})
	return r
}

// consent signs in and allows access at the IdP, as the user would in a
// browser, and returns where the browser is sent.
func (r *authcodeRun) consent(t *testing.T) *url.URL {
	t.Helper()
	loc, err := oauthtest.Consent(r.authURL.String())
	if err != nil {
		t.Fatalf("consent: %v", err)
	}
	return loc
}

// deliver plays the browser following the redirect to the loopback
// listener, and returns the page's status and text.
func deliver(t *testing.T, loc *url.URL) (int, string) {
	t.Helper()
	resp, err := http.Get(loc.String())
	if err != nil {
		t.Fatalf("redirect to %s: %v", loc.Redacted(), err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// paste types s and Enter at the command's prompt.
func (r *authcodeRun) paste(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(r.stdin, s+"\n"); err != nil {
		t.Fatal(err)
	}
}

// wait waits for the command to end and returns its output and error;
// it kills a command still waiting after a generous limit.
func (r *authcodeRun) wait() (string, error) {
	t := time.AfterFunc(30*time.Second, func() { r.cmd.Process.Kill() })
	defer t.Stop()
	err := r.cmd.Wait()
	return r.out.String(), err
}

// TestOAuth2AuthorizeCode runs `outbox oauth2 authorize` for a Google
// upstream (authorization code flow with PKCE by default) against a fake
// IdP that checks PKCE S256, the state echo and the redirect URI, with
// the code delivered both ways: the browser's redirect to the loopback
// listener, and the redirected URL (or the bare code) pasted at the
// prompt. Then the refused cases: a state that is not ours, a code
// exchanged with another run's verifier, the user denying access.
func TestOAuth2AuthorizeCode(t *testing.T) {
	idp := oauthtest.NewIdP(t)
	idp.ClientSecret = "gsecret"
	p := testutil.NewPKI(t, "Outbox Test CA")
	mb := &oauthtest.Mailbox{User: "app@example.com", Valid: idp.ValidAccess}
	mbPort := mb.Start(t, p.ServerTLS)

	w := newWorld(t)
	rtFile := filepath.Join(w.dir, "gmail.token")
	secretFile := filepath.Join(w.dir, "gmail.secret")
	testutil.WriteFile(t, secretFile, []byte(idp.ClientSecret+"\n"), 0o600)
	oauthUpstream(t, w, "gmail", mbPort, p.CAFile, fmt.Sprintf(`provider = "google"
token_url = "%s/token"
auth_url = "%s/auth"
device_auth_url = "%s/device"
client_id = %q
client_secret_file = %q
refresh_token_file = %q
`, idp.URL, idp.URL, idp.URL, idp.ClientID, secretFile, rtFile))

	var outputs []string
	stored := func(t *testing.T, r *authcodeRun) {
		t.Helper()
		out, err := r.wait()
		outputs = append(outputs, out)
		if err != nil || !strings.Contains(out, "Stored the refresh token in "+rtFile) {
			t.Fatalf("authorize: %v\n%s", err, out)
		}
		b, err := os.ReadFile(rtFile)
		if err != nil || !idp.ValidRefresh(strings.TrimSpace(string(b))) {
			t.Fatalf("%s holds no refresh token the IdP knows: %v", rtFile, err)
		}
		if fi, _ := os.Stat(rtFile); fi.Mode().Perm()&0o037 != 0 {
			t.Errorf("%s has mode %04o", rtFile, fi.Mode().Perm())
		}
	}
	refused := func(t *testing.T, r *authcodeRun, want string) {
		t.Helper()
		before, _ := os.ReadFile(rtFile)
		out, err := r.wait()
		outputs = append(outputs, out)
		if ee, _ := err.(*exec.ExitError); ee == nil || ee.ExitCode() != 1 || !strings.Contains(out, want) {
			t.Errorf("authorize: %v\n%s\nwant exit 1 and %q", err, out, want)
		}
		if after, _ := os.ReadFile(rtFile); string(after) != string(before) {
			t.Errorf("%s changed by a refused authorization", rtFile)
		}
	}

	t.Run("loopback redirect", func(t *testing.T) {
		r := startAuthcode(t, w.config, "gmail", idp)
		q := r.authURL.Query()
		for k, v := range map[string]string{"access_type": "offline", "prompt": "consent", "code_challenge_method": "S256",
			"login_hint": "app@example.com", "scope": "https://mail.google.com/", "response_type": "code"} {
			if q.Get(k) != v {
				t.Errorf("authorization URL has %s=%q, want %q", k, q.Get(k), v)
			}
		}
		loc := r.consent(t)
		if hint := fmt.Sprintf("ssh -L %s:127.0.0.1:%s ", loc.Port(), loc.Port()); !strings.Contains(r.out.String(), hint) {
			t.Errorf("no %q hint:\n%s", hint, r.out)
		}
		if status, page := deliver(t, loc); status != http.StatusOK || !strings.Contains(page, "stored") {
			t.Errorf("browser got %d:\n%s", status, page)
		}
		stored(t, r)
		if n := idp.Requests(oauthtest.GrantCode); n != 1 {
			t.Errorf("%d code exchanges, want 1", n)
		}
		// The daemon's side takes the token from there.
		out2, err := exec.Command(filepath.Join(bin, "outbox"), "check", "--config", w.config).CombinedOutput()
		outputs = append(outputs, string(out2))
		if err != nil || !strings.Contains(string(out2), "XOAUTH2 as app@example.com: accepted") {
			t.Errorf("outbox check: %v\n%s", err, out2)
		}
	})

	t.Run("pasted URL", func(t *testing.T) {
		// The browser elsewhere cannot reach the port: the user pastes
		// what its address bar shows. A second consent: only prompt=consent
		// brings a new refresh token.
		port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
		r := startAuthcode(t, w.config, "gmail", idp, "--port", port)
		if got := r.authURL.Query().Get("redirect_uri"); got != "http://127.0.0.1:"+port+"/" {
			t.Errorf("redirect_uri = %q, want port %s", got, port)
		}
		r.paste(t, "  "+r.consent(t).String())
		stored(t, r)
	})

	t.Run("pasted code", func(t *testing.T) {
		r := startAuthcode(t, w.config, "gmail", idp)
		r.paste(t, r.consent(t).Query().Get("code"))
		stored(t, r)
	})

	t.Run("device flow on request", func(t *testing.T) {
		outputs = append(outputs, authorize(t, w.config, "gmail", idp, "--flow=device"))
	})

	for _, how := range []string{"loopback", "pasted"} {
		t.Run("state mismatch "+how, func(t *testing.T) {
			exchanges := idp.Requests(oauthtest.GrantCode)
			r := startAuthcode(t, w.config, "gmail", idp)
			loc := r.consent(t)
			q := loc.Query()
			q.Set("state", "forged"+q.Get("state"))
			loc.RawQuery = q.Encode()
			if how == "pasted" {
				r.paste(t, loc.String())
			} else if status, page := deliver(t, loc); status != http.StatusBadRequest || !strings.Contains(page, "state does not match") {
				t.Errorf("browser got %d:\n%s", status, page)
			}
			refused(t, r, "the redirect's state does not match this authorization request")
			if n := idp.Requests(oauthtest.GrantCode); n != exchanges {
				t.Errorf("%d code exchanges, want none", n-exchanges)
			}
		})
	}

	t.Run("another run's code", func(t *testing.T) {
		// A code issued for an earlier run's challenge (same port, so the
		// redirect URI matches), pasted into a new run: the verifier does
		// not match, and the IdP refuses it.
		port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
		a := startAuthcode(t, w.config, "gmail", idp, "--port", port)
		code := a.consent(t).Query().Get("code")
		if code == "" {
			t.Fatal("no code from the IdP")
		}
		a.cmd.Process.Kill()
		a.wait()
		b := startAuthcode(t, w.config, "gmail", idp, "--port", port)
		b.paste(t, code)
		refused(t, b, "exchanging the code at "+idp.URL+"/token: invalid_grant: Invalid code verifier.")
	})

	t.Run("access denied", func(t *testing.T) {
		idp.Lock()
		idp.Deny = true
		idp.Unlock()
		defer func() { idp.Lock(); idp.Deny = false; idp.Unlock() }()
		r := startAuthcode(t, w.config, "gmail", idp)
		if status, page := deliver(t, r.consent(t)); status != http.StatusBadRequest || !strings.Contains(page, "access_denied") {
			t.Errorf("browser got %d:\n%s", status, page)
		}
		refused(t, r, "the authorization was refused at the provider (access_denied: The user denied access)")
	})

	t.Run("unusable paste", func(t *testing.T) {
		r := startAuthcode(t, w.config, "gmail", idp)
		r.paste(t, "http://127.0.0.1:1/?oops")
		refused(t, r, "the pasted text is not a redirected URL")
	})

	all := strings.Join(outputs, "\n")
	for _, tok := range append(idp.Tokens(), idp.ClientSecret) {
		if strings.Contains(all, tok) {
			t.Errorf("secret %s appears in the output:\n%s", tok, all)
		}
	}
}
