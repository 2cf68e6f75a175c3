package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxmta/outbox/internal/oauthtest"
	"github.com/outboxmta/outbox/internal/testutil"
)

// TestOAuth2EndToEnd runs the real daemon against a fake token endpoint
// (short-lived tokens, rotated refresh tokens) and an SMTP server that
// takes only live tokens: mail flows across refreshes and a restart, a
// revoked consent defers mail without bouncing it and says how to fix
// it, `outbox oauth2 authorize` (device flow) fixes it, and no token
// appears in any output.
func TestOAuth2EndToEnd(t *testing.T) {
	idp := oauthtest.NewIdP(t)
	idp.Expiry, idp.Rotate = 2*time.Second, true
	p := testutil.NewPKI(t, "Outbox Test CA")
	mb := &oauthtest.Mailbox{User: "app@example.com", Valid: idp.ValidAccess}
	port := mb.Start(t, p.ServerTLS)

	w := newWorld(t)
	rtFile := filepath.Join(w.dir, "m365.token")
	testutil.WriteFile(t, rtFile, []byte(idp.NewRefreshToken()+"\n"), 0o600)
	oauthUpstream(t, w, "m365", port, p.CAFile, fmt.Sprintf(`token_url = "%s/token"
device_auth_url = "%s/device"
client_id = %q
refresh_token_file = %q
scopes = ["https://outlook.office.com/SMTP.Send", "offline_access"]
`, idp.URL, idp.URL, idp.ClientID, rtFile))

	var outputs []string
	send := func(want int) {
		t.Helper()
		if out, err := w.sendmail(t, "Subject: hi\n\nhello\n", "ops@example.net"); err != nil {
			t.Fatalf("sendmail: %v\n%s", err, out)
		}
		waitFor(t, fmt.Sprintf("message %d at the server", want), func() bool { n, _, _ := mb.Counts(); return n == want })
	}

	w.startServe(t)
	send(1)
	time.Sleep(1500 * time.Millisecond) // past the refresh time: a new token, a rotated refresh token
	send(2)
	if err := w.serve.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("serve: %v", err)
	}
	outputs = append(outputs, w.serve.out.String())

	// A restart after the rotation uses the stored, new refresh token.
	w.startServe(t)
	send(3)
	if n := idp.Requests(oauthtest.GrantRefresh); n < 2 {
		t.Errorf("%d refresh requests, want a refresh before the restart and one after", n)
	}

	// Consent revoked: the mail waits, nothing is bounced, one loud line.
	idp.RevokeAll()
	time.Sleep(2 * time.Second) // the cached access token expires
	if out, err := w.sendmail(t, "Subject: waits\n\nhello\n", "ops@example.net"); err != nil {
		t.Fatalf("sendmail: %v\n%s", err, out)
	}
	waitFor(t, "the refused refresh token to be logged", func() bool {
		return strings.Contains(w.serve.out.String(), "outbox oauth2 authorize m365")
	})
	// A retry too is refused, and is not logged as an error again.
	waitFor(t, "a second attempt", func() bool {
		for line := range strings.SplitSeq(w.serve.out.String(), "\n") {
			if strings.Contains(line, "msg=deferred") && strings.Contains(line, " attempts=2 ") {
				return true
			}
		}
		return false
	})
	q := w.queue(t)
	if len(q) != 1 || q[0].State != "queue" {
		t.Fatalf("queue = %+v, want the message queued", q)
	}
	if n, _, _ := mb.Counts(); n != 3 {
		t.Errorf("server has %d messages, want 3", n)
	}
	if n := strings.Count(w.serve.out.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d error lines, want one:\n%s", n, w.serve.out)
	}
	if out, _ := exec.Command(filepath.Join(bin, "outbox"), "queue", "list", "--failed", "--config", w.config).CombinedOutput(); strings.Contains(string(out), "@") {
		t.Errorf("failed/ is not empty:\n%s", out)
	}

	// The administrator authorizes again with the device flow.
	authOut := authorize(t, w.config, "m365", idp)
	outputs = append(outputs, authOut)
	if fi, err := os.Stat(rtFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("refresh token file after authorize: %v, %v; want mode 0600 kept", fi.Mode(), err)
	}
	send(4)

	out, err := exec.Command(filepath.Join(bin, "outbox"), "check", "--config", w.config).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "XOAUTH2 as app@example.com: accepted") {
		t.Errorf("outbox check: %v\n%s", err, out)
	}
	outputs = append(outputs, string(out))
	w.serve.stop(t, syscall.SIGTERM)
	outputs = append(outputs, w.serve.out.String())

	all := strings.Join(outputs, "\n")
	for _, tok := range idp.Tokens() {
		if strings.Contains(all, tok) {
			t.Errorf("token %s appears in the output:\n%s", tok, all)
		}
	}
}

// oauthUpstream replaces the world's upstream with one named name, on
// the loopback port with STARTTLS (CA caFile), user app@example.com, and
// an [upstream.oauth2] table holding table.
func oauthUpstream(t *testing.T, w *world, name string, port int, caFile, table string) {
	t.Helper()
	cfg, _ := os.ReadFile(w.config)
	head, _, _ := strings.Cut(string(cfg), "[[upstream]]")
	cfg = fmt.Appendf([]byte(head), `[[upstream]]
name = %q
host = "127.0.0.1"
port = %d
tls = "starttls"
ca_file = %q
username = "app@example.com"
idle_timeout = "0s" # no connection reuse: every message authenticates with the token of the moment

[upstream.oauth2]
%s`, name, port, caFile, table)
	testutil.WriteFile(t, w.config, cfg, 0o644)
}

// authorize runs `outbox oauth2 authorize NAME` with the device flow,
// approves the code it prints at the IdP as a user would, and returns
// its output.
func authorize(t *testing.T, config, name string, idp *oauthtest.IdP, flags ...string) string {
	t.Helper()
	args := append([]string{"oauth2", "authorize", "--config", config}, flags...)
	cmd := dieWithTest(exec.Command(filepath.Join(bin, "outbox"), append(args, name)...))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(stdout)
	approved := false
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		if code := strings.TrimSpace(line); !approved && len(code) == 9 && code[4] == '-' {
			approved = idp.Approve(code)
		}
	}
	if err := cmd.Wait(); err != nil || !approved {
		t.Fatalf("outbox oauth2 authorize: %v (code approved: %v)\n%s%s", err, approved, out.String(), stderr.String())
	}
	if !strings.Contains(out.String(), idp.URL+"/verify") || !strings.Contains(out.String(), "Stored the refresh token") {
		t.Errorf("authorize output:\n%s", out.String())
	}
	return out.String() + stderr.String()
}

func TestOAuth2AuthorizeErrors(t *testing.T) {
	w := newWorld(t)
	for _, tt := range []struct {
		args []string
		want string
		code int
	}{
		{[]string{"oauth2", "authorize", "--config", w.config, "nosuch"}, `no upstream named "nosuch" (no upstream has an [upstream.oauth2] table)`, 64},
		{[]string{"oauth2", "--config", w.config}, "usage: outbox oauth2 authorize", 64},
	} {
		out, err := exec.Command(filepath.Join(bin, "outbox"), tt.args...).CombinedOutput()
		ee, _ := err.(*exec.ExitError)
		if ee == nil || ee.ExitCode() != tt.code || !strings.Contains(string(out), tt.want) {
			t.Errorf("outbox %s: %v\n%s\nwant exit %d and %q", strings.Join(tt.args, " "), err, out, tt.code, tt.want)
		}
	}
}
