package listener

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/outboxmta/outbox/internal/testutil"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

const (
	alicePassword = "correct horse battery staple"
	bobPassword   = "hunter2-but-longer"
)

// usersFile writes a users file for alice and bob with bcrypt hashes and
// returns its path.
func usersFile(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# test users\n\n")
	for _, u := range []struct{ name, pw string }{{"alice", alicePassword}, {"bob", bobPassword}} {
		h, err := bcrypt.GenerateFromPassword([]byte(u.pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%s\n", u.name, h)
	}
	path := filepath.Join(t.TempDir(), "users")
	testutil.WriteFile(t, path, []byte(b.String()), 0o640)
	return path
}

// rawConn is an SMTP connection driven line by line, for replies the
// go-smtp client would not show as they are.
type rawConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

// rawSTARTTLS connects, says EHLO and turns on TLS.
func rawSTARTTLS(t *testing.T, addr string, cfg *tls.Config) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	rc := &rawConn{t: t, c: c, r: bufio.NewReader(c)}
	rc.reply()
	rc.cmd("EHLO client.test")
	if r := rc.cmd("STARTTLS"); !strings.HasPrefix(r, "220 ") {
		t.Fatalf("STARTTLS: %q", r)
	}
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	rc.c, rc.r = tc, bufio.NewReader(tc)
	rc.cmd("EHLO client.test")
	return rc
}

// reply reads one reply, all its lines.
func (rc *rawConn) reply() string {
	rc.t.Helper()
	var b strings.Builder
	for {
		line, err := rc.r.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			rc.t.Fatalf("reading reply: %v (so far %q)", err, b.String())
		}
		if len(line) < 4 || line[3] != '-' {
			return b.String()
		}
	}
}

func (rc *rawConn) cmd(line string) string {
	rc.t.Helper()
	if _, err := rc.c.Write([]byte(line + "\r\n")); err != nil {
		rc.t.Fatal(err)
	}
	return rc.reply()
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestAuthPolicy(t *testing.T) {
	pki, users := testutil.NewPKI(t, "Outbox test CA"), usersFile(t)
	only1 := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	const inside, outside = "127.0.0.1", "127.0.0.2"
	tests := []struct {
		name     string
		tls      TLSMode
		auth     AuthMode
		from     string
		starttls bool
		client   sasl.Client // nil: no AUTH
		authCode int         // reply to AUTH when it fails
		mailCode int         // reply to MAIL when refused
		received []string    // in the stored Received: header
		user     string      // the authenticated user in the envelope
	}{
		{name: "PLAIN after STARTTLS", tls: TLSStartTLS, auth: AuthOptional, from: outside, starttls: true,
			client: sasl.NewPlainClient("", "alice", alicePassword), user: "alice",
			received: []string{"\r\n\t(Authenticated sender: alice)\r\n\tby relay.test (Outbox) with ESMTPSA id "}},
		{name: "PLAIN with the user as authorization identity", tls: TLSStartTLS, auth: AuthOptional, from: outside, starttls: true,
			client: sasl.NewPlainClient("alice", "alice", alicePassword), user: "alice", received: []string{"with ESMTPSA"}},
		{name: "LOGIN after STARTTLS", tls: TLSStartTLS, auth: AuthRequired, from: outside, starttls: true,
			client: sasl.NewLoginClient("bob", bobPassword), user: "bob", received: []string{"(Authenticated sender: bob)", "with ESMTPSA"}},
		{name: "PLAIN over implicit TLS", tls: TLSImplicit, auth: AuthRequired, from: inside,
			client: sasl.NewPlainClient("", "alice", alicePassword), user: "alice", received: []string{"(using TLSv1.3", "with ESMTPSA"}},
		{name: "wrong password", tls: TLSStartTLS, auth: AuthOptional, from: outside, starttls: true,
			client: sasl.NewPlainClient("", "alice", bobPassword), authCode: 535, mailCode: 530},
		{name: "wrong password with LOGIN", tls: TLSStartTLS, auth: AuthOptional, from: outside, starttls: true,
			client: sasl.NewLoginClient("alice", "guess"), authCode: 535, mailCode: 530},
		{name: "unknown user", tls: TLSStartTLS, auth: AuthOptional, from: outside, starttls: true,
			client: sasl.NewPlainClient("", "mallory", alicePassword), authCode: 535, mailCode: 530},
		{name: "PLAIN as someone else", tls: TLSStartTLS, auth: AuthOptional, from: outside, starttls: true,
			client: sasl.NewPlainClient("bob", "alice", alicePassword), authCode: 535, mailCode: 530},
		{name: "required: allowed network without AUTH, plaintext", tls: TLSStartTLS, auth: AuthRequired, from: inside,
			mailCode: 530},
		{name: "required: allowed network without AUTH, over TLS", tls: TLSStartTLS, auth: AuthRequired, from: inside, starttls: true,
			mailCode: 530},
		{name: "optional: outside allow_networks without AUTH", tls: TLSStartTLS, auth: AuthOptional, from: outside,
			mailCode: 530},
		{name: "optional: outside allow_networks over TLS without AUTH", tls: TLSStartTLS, auth: AuthOptional, from: outside, starttls: true,
			mailCode: 530},
		{name: "optional: allowed network without AUTH", tls: TLSStartTLS, auth: AuthOptional, from: inside,
			received: []string{"with ESMTP id"}},
		{name: "optional: allowed network over TLS without AUTH", tls: TLSStartTLS, auth: AuthOptional, from: inside, starttls: true,
			received: []string{"with ESMTPS id"}},
		{name: "no auth: outside allow_networks", tls: TLSStartTLS, auth: AuthNone, from: outside, starttls: true,
			mailCode: 554},
		{name: "auth without tls is never offered: relay denied", tls: TLSNone, auth: AuthOptional, from: outside,
			mailCode: 554},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, logs := serveLogged(t, Endpoint{Networks: only1, TLS: tt.tls, CertFile: pki.CertFile, KeyFile: pki.KeyFile,
				Auth: tt.auth, UsersFile: users})
			mode := TLSNone
			if tt.tls == TLSImplicit {
				mode = TLSImplicit
			} else if tt.starttls {
				mode = TLSStartTLS
			}
			c := dial(t, f.addr, tt.from, mode, pki.Client())
			if tt.client != nil {
				err := c.Auth(tt.client)
				if code(err) != tt.authCode || (err != nil) != (tt.authCode != 0) {
					t.Fatalf("AUTH: %v, want code %d", err, tt.authCode)
				}
				if tt.authCode == 535 && err.(*smtp.SMTPError).EnhancedCode != (smtp.EnhancedCode{5, 7, 8}) {
					t.Errorf("AUTH failure %#v is not 5.7.8", err)
				}
			}
			err := send(c, "Subject: policy\r\n\r\nhi\r\n")
			if code(err) != tt.mailCode || (err != nil) != (tt.mailCode != 0) {
				t.Fatalf("sending: %v, want code %d", err, tt.mailCode)
			}
			if tt.mailCode == 530 && err.(*smtp.SMTPError).EnhancedCode != (smtp.EnhancedCode{5, 7, 0}) {
				t.Errorf("refusal %#v is not 5.7.0", err)
			}
			recs := f.records(t)
			if tt.mailCode != 0 {
				if len(recs) != 0 {
					t.Errorf("%d messages spooled for a refused client", len(recs))
				}
			} else {
				if len(f.queued) != 1 {
					t.Fatalf("%d messages queued, want 1", len(f.queued))
				}
				env, body := f.queued[0], recs[f.queued[0].ID]
				if env.Origin.User != tt.user {
					t.Errorf("Origin.User = %q, want %q", env.Origin.User, tt.user)
				}
				for _, w := range tt.received {
					if !strings.Contains(body, w) {
						t.Errorf("Received: header lacks %q:\n%s", w, body)
					}
				}
			}
			l := logs.String()
			for _, pw := range []string{alicePassword, bobPassword, "guess"} {
				if strings.Contains(l, pw) {
					t.Errorf("log holds a password:\n%s", l)
				}
			}
			if tt.authCode == 535 && (strings.Count(l, "authentication failed") != 1 || !strings.Contains(l, "client=127.0.0.2:")) {
				t.Errorf("want one log line naming the failed user and the client:\n%s", l)
			}
		})
	}
}

// AUTH is offered, and accepted, only once the session runs over TLS.
func TestAuthOnlyOverTLS(t *testing.T) {
	pki := testutil.NewPKI(t, "Outbox test CA")
	f := serve(t, Endpoint{Networks: loopback, TLS: TLSStartTLS, CertFile: pki.CertFile, KeyFile: pki.KeyFile,
		Auth: AuthOptional, UsersFile: usersFile(t)})
	c := dial(t, f.addr, "", TLSNone, nil)
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("AUTH offered before STARTTLS")
	}
	out := dialog(t, "tcp", f.addr, nil, "EHLO x\r\nAUTH PLAIN "+b64("\x00alice\x00"+alicePassword)+"\r\nQUIT\r\n")
	if strings.Contains(out, "AUTH") && strings.Contains(out, "250-AUTH") || !strings.Contains(out, "\r\n523 5.7.10") {
		t.Errorf("AUTH before STARTTLS not refused:\n%s", out)
	}
	c = dial(t, f.addr, "", TLSStartTLS, pki.Client())
	if ok, mechs := c.Extension("AUTH"); !ok || mechs != "PLAIN LOGIN" {
		t.Errorf("over TLS: AUTH offered %v with %q, want PLAIN LOGIN", ok, mechs)
	}
}

// LOGIN without an initial response, cancelled exchanges and malformed
// responses, as raw replies.
func TestAuthDialogs(t *testing.T) {
	pki, users := testutil.NewPKI(t, "Outbox test CA"), usersFile(t)
	f := serve(t, Endpoint{Networks: loopback, TLS: TLSStartTLS, CertFile: pki.CertFile, KeyFile: pki.KeyFile,
		Auth: AuthOptional, UsersFile: users})
	for _, tt := range []struct {
		name  string
		steps [][2]string // command, start of the reply
	}{
		{"LOGIN step by step", [][2]string{
			{"AUTH LOGIN", "334 " + b64("Username:")},
			{b64("alice"), "334 " + b64("Password:")},
			{b64(alicePassword), "235 2.0.0"},
			{"AUTH PLAIN " + b64("\x00alice\x00"+alicePassword), "503 5.5.1"}, // already authenticated
		}},
		{"PLAIN without initial response", [][2]string{
			{"AUTH PLAIN", "334 "},
			{b64("\x00bob\x00" + bobPassword), "235 2.0.0"},
		}},
		{"cancelled", [][2]string{
			{"AUTH LOGIN", "334 "},
			{"*", "501 5.0.0"},
			{"MAIL FROM:<a@example.com>", "250 "}, // 127.0.0.1 is allowed without AUTH
		}},
		{"malformed PLAIN", [][2]string{
			{"AUTH PLAIN " + b64("no separators"), "501 5.5.2"},
			{"AUTH PLAIN !!!", "454 4.7.0"}, // not base64: go-smtp's reply
		}},
		{"unknown mechanism", [][2]string{
			{"AUTH CRAM-MD5", "504 5.7.4"},
		}},
		{"AUTH during a transaction", [][2]string{
			{"MAIL FROM:<a@example.com>", "250 "},
			{"AUTH PLAIN " + b64("\x00alice\x00"+alicePassword), "503 5.5.1 AUTH not permitted during a mail transaction"},
		}},
		{"too many failures", [][2]string{
			{"AUTH PLAIN " + b64("\x00alice\x00x"), "535 5.7.8"},
			{"AUTH LOGIN " + b64("alice"), "334 "},
			{b64("y"), "535 5.7.8"},
			{"AUTH PLAIN " + b64("\x00alice\x00z"), "535 5.7.8"},
			{"AUTH PLAIN " + b64("\x00alice\x00"+alicePassword), "454 4.7.0"},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rc := rawSTARTTLS(t, f.addr, pki.Client())
			for _, s := range tt.steps {
				if r := rc.cmd(s[0]); !strings.HasPrefix(r, s[1]) {
					t.Fatalf("%q: reply %q, want %q", s[0], r, s[1])
				}
			}
		})
	}
}

// Unix socket clients never need AUTH, and are not offered it.
func TestAuthUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "smtp.sock")
	f := serve(t, Endpoint{Address: sock, Auth: AuthRequired, UsersFile: usersFile(t)})
	out := dialog(t, "unix", sock, nil, "EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n")
	if strings.Contains(out, "AUTH") || !strings.Contains(out, "queued as") {
		t.Errorf("unix socket session:\n%s", out)
	}
	if len(f.queued) != 1 {
		t.Errorf("%d messages queued", len(f.queued))
	}
}

// Serve refuses to start with a users file it cannot use.
func TestServeBadUsersFile(t *testing.T) {
	pki, users := testutil.NewPKI(t, "Outbox test CA"), usersFile(t)
	if err := os.Chmod(users, 0o644); err != nil {
		t.Fatal(err)
	}
	ep := Endpoint{Address: "127.0.0.1:0", Networks: loopback, TLS: TLSStartTLS, CertFile: pki.CertFile, KeyFile: pki.KeyFile,
		Auth: AuthRequired, UsersFile: users}
	sp, err := spoolForTest(t)
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen(ep)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = New(sp, Options{Hostname: "relay.test"}, nil, discard).Serve(t.Context(), l, ep)
	if err == nil || !strings.Contains(err.Error(), users) || !strings.Contains(err.Error(), "0644") {
		t.Errorf("Serve with a world-readable users file: %v", err)
	}
}

func argon2idPHC(password string, m, t uint32, p uint8) string {
	salt := make([]byte, 16)
	rand.Read(salt)
	key := argon2.IDKey([]byte(password), salt, t, m, p, 32)
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", m, t, p,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
}

func TestLoadUsers(t *testing.T) {
	bc := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	// $2y$ is what PHP's password_hash and htpasswd -B write.
	y := "$2y$" + strings.TrimPrefix(bc("y-pass"), "$2a$")
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		err     string            // part of the error; "" for none
		ok      map[string]string // user → password that must verify
		bad     map[string]string // user → password that must not
	}{
		{name: "bcrypt and argon2id with comments",
			content: "# users\n\nalice:" + bc("a-pass") + "\r\n  # indented comment\ncarol:" + y + "\ndave:" + argon2idPHC("d-pass", 64, 1, 1) + "\n",
			mode:    0o600,
			ok:      map[string]string{"alice": "a-pass", "carol": "y-pass", "dave": "d-pass"},
			bad:     map[string]string{"alice": "A-pass", "carol": "a-pass", "dave": "d-pas", "erin": "a-pass", "": ""}},
		{name: "bcrypt ignores bytes after 72; we do not",
			content: "alice:" + bc(strings.Repeat("x", 72)) + "\n", mode: 0o600,
			ok:  map[string]string{"alice": strings.Repeat("x", 72)},
			bad: map[string]string{"alice": strings.Repeat("x", 73)}},
		{name: "readable by others", content: "alice:" + bc("a") + "\n", mode: 0o644, err: "accessible to every user (mode 0644)"},
		{name: "writable by others", content: "alice:" + bc("a") + "\n", mode: 0o602, err: "mode 0602"},
		{name: "no colon", content: "# x\nalice\n", mode: 0o600, err: ":2: want \"user:hash\""},
		{name: "plain text password", content: "alice:secret\n", mode: 0o600, err: ":1: user \"alice\": unknown hash format"},
		{name: "md5crypt", content: "alice:$1$abc$def\n", mode: 0o600, err: "unknown hash format"},
		{name: "truncated bcrypt", content: "alice:" + bc("a")[:30] + "\n", mode: 0o600, err: "malformed bcrypt hash"},
		{name: "argon2i", content: "alice:$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\n", mode: 0o600, err: "unknown hash format"},
		{name: "argon2id old version", content: "alice:$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\n", mode: 0o600, err: "v=19"},
		{name: "argon2id bad params", content: "alice:$argon2id$v=19$m=64,t=0,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\n", mode: 0o600, err: "at least 1"},
		{name: "duplicate user", content: "alice:" + bc("a") + "\nalice:" + bc("b") + "\n", mode: 0o600, err: ":2: user \"alice\" is listed twice"},
		{name: "empty", content: "# nobody yet\n", mode: 0o600, bad: map[string]string{"alice": "a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "users")
			testutil.WriteFile(t, path, []byte(tt.content), tt.mode)
			u, err := LoadUsers(path)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), path) {
					t.Fatalf("LoadUsers: %v, want an error naming the file and containing %q", err, tt.err)
				}
				for line := range strings.Lines(tt.content) {
					if _, hash, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && strings.Contains(err.Error(), hash) {
						t.Errorf("error shows a hash: %v", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for user, pw := range tt.ok {
				if !u.Verify(user, pw) {
					t.Errorf("Verify(%q, %q) = false", user, pw)
				}
			}
			for user, pw := range tt.bad {
				if u.Verify(user, pw) {
					t.Errorf("Verify(%q, %q) = true", user, pw)
				}
			}
		})
	}
	if _, err := LoadUsers(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
}

// An unknown user costs a real hash check, against another user's hash, so
// that the reply time does not tell which users exist; and it is refused even
// with that user's password.
func TestVerifyUnknownUserChecksAHash(t *testing.T) {
	h, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "users")
	testutil.WriteFile(t, path, []byte("alice:"+string(h)+"\n"), 0o600)
	u, err := LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingHash{passwordHash: u.dummy}
	u.dummy = counted
	for _, pw := range []string{"wrong", "pw"} {
		if u.Verify("nobody", pw) {
			t.Errorf("unknown user accepted with password %q", pw)
		}
	}
	if counted.n != 2 {
		t.Errorf("unknown users checked %d hashes, want 2 (one each)", counted.n)
	}
	if !u.Verify("alice", "pw") || u.Verify("alice", "wrong") {
		t.Error("alice's own password is not checked")
	}
}

type countingHash struct {
	passwordHash
	n int
}

func (c *countingHash) verify(pw []byte) bool {
	c.n++
	return c.passwordHash.verify(pw)
}

// Reconfigure reads the users file again: a new user can log in at once.
func TestReconfigureUsers(t *testing.T) {
	pki := testutil.NewPKI(t, "Outbox test CA")
	path := filepath.Join(t.TempDir(), "users")
	h, _ := bcrypt.GenerateFromPassword([]byte(alicePassword), bcrypt.MinCost)
	testutil.WriteFile(t, path, []byte("alice:"+string(h)+"\n"), 0o600)
	sp, err := spoolForTest(t)
	if err != nil {
		t.Fatal(err)
	}
	srv := New(sp, Options{Hostname: "relay.test"}, nil, discard)
	ep := Endpoint{Address: "127.0.0.1:0", Networks: loopback, TLS: TLSStartTLS, CertFile: pki.CertFile, KeyFile: pki.KeyFile,
		Auth: AuthRequired, UsersFile: path}
	l, err := Listen(ep)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { done <- srv.Serve(ctx, l, ep) }()
	defer func() { cancel(); <-done }()

	login := func(user, pw string) error {
		c := dial(t, l.Addr().String(), "", TLSStartTLS, pki.Client())
		defer c.Close()
		return c.Auth(sasl.NewPlainClient("", user, pw))
	}
	if err := login("bob", bobPassword); code(err) != 535 {
		t.Fatalf("bob before reload: %v", err)
	}
	hb, _ := bcrypt.GenerateFromPassword([]byte(bobPassword), bcrypt.MinCost)
	testutil.WriteFile(t, path, []byte("alice:"+string(h)+"\nbob:"+string(hb)+"\n"), 0o600)
	if err := srv.Reconfigure(Options{Hostname: "relay.test"}, []Endpoint{ep}); err != nil {
		t.Fatal(err)
	}
	if err := login("bob", bobPassword); err != nil {
		t.Errorf("bob after reload: %v", err)
	}
	// A broken file is refused and the users in force stay.
	testutil.WriteFile(t, path, []byte("bob:plaintext\n"), 0o600)
	if err := srv.Reconfigure(Options{Hostname: "relay.test"}, []Endpoint{ep}); err == nil {
		t.Error("Reconfigure accepted a broken users file")
	}
	if err := login("alice", alicePassword); err != nil {
		t.Errorf("alice after a failed reload: %v", err)
	}
}
