package listener

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/outboxmta/outbox/internal/crlf"
	"github.com/outboxmta/outbox/internal/testutil"
	"github.com/outboxmta/outbox/spool"
)

type fixture struct {
	spool  *spool.Spool
	addr   string
	logs   *testutil.SyncBuffer // what the server logged
	mu     sync.Mutex
	queued []*spool.Envelope
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// serve starts a listener on a fresh address (a TCP port, or the unix
// socket path given) with policy ep and small limits.
func serve(t *testing.T, ep Endpoint) *fixture {
	t.Helper()
	return serveWith(t, ep, Options{Hostname: "relay.test", MaxMessageSize: 1024, MaxRecipients: 3})
}

func serveWith(t *testing.T, ep Endpoint, opts Options) *fixture {
	t.Helper()
	sp, err := spool.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{spool: sp, logs: &testutil.SyncBuffer{}}
	srv := New(sp, opts,
		func(env *spool.Envelope) { f.mu.Lock(); f.queued = append(f.queued, env); f.mu.Unlock() },
		slog.New(slog.NewTextHandler(f.logs, nil)))
	if ep.Address == "" {
		ep.Address = "127.0.0.1:0"
	}
	l, err := Listen(ep)
	if err != nil {
		t.Fatal(err)
	}
	f.addr = l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx, l, ep) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return f
}

func (f *fixture) records(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := f.spool.Scan(spool.Queue, func(env *spool.Envelope) error {
		_, body, err := f.spool.Read(spool.Queue, env.ID)
		out[env.ID] = string(body)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dialog sends raw lines and returns every reply line, so tests see exactly
// what a client would.
func dialog(t *testing.T, network, addr string, local net.Addr, send string) string {
	t.Helper()
	d := net.Dialer{LocalAddr: local}
	c, err := d.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() { c.Write([]byte(send)) }()
	var b strings.Builder
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		b.WriteString(line)
		if err != nil || strings.HasPrefix(line, "221 ") {
			return b.String()
		}
	}
}

func TestAcceptAndSpool(t *testing.T) {
	f := serve(t, Endpoint{Networks: loopback})
	c, err := smtp.Dial(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("app.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("app@example.com", &smtp.MailOptions{Body: smtp.Body8BitMIME}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"bob@example.net", "root@example.com"} {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	w, _ := c.Data()
	w.Write([]byte("Subject: hi\r\n\r\nline one\r\nbare lf\nbare cr\rend"))
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatal(err)
	}
	recs := f.records(t)
	if len(recs) != 1 || len(f.queued) != 1 {
		t.Fatalf("%d records, %d notifications; want 1", len(recs), len(f.queued))
	}
	env := f.queued[0]
	if !strings.Contains(resp.StatusText, env.ID) {
		t.Errorf("reply %q does not name queue ID %s", resp.StatusText, env.ID)
	}
	body := recs[env.ID]
	if !strings.HasPrefix(body, "Received: from app.test (127.0.0.1:") || !strings.Contains(body, "by relay.test (Outbox) with ESMTP id "+env.ID) {
		t.Errorf("no proper Received: header:\n%s", body)
	}
	if !strings.HasSuffix(body, "Subject: hi\r\n\r\nline one\r\nbare lf\r\nbare cr\r\nend\r\n") || !crlf.Canonical([]byte(body)) {
		t.Errorf("stored message not canonical: %q", body)
	}
	if env.From != "app@example.com" || !env.EightBit || env.Origin.Kind != "smtp" || env.Origin.Helo != "app.test" {
		t.Errorf("envelope = %+v", env)
	}
	if len(env.Recipients) != 2 || env.Recipients[1].Addr != "root@example.com" || env.Recipients[1].Status != spool.Pending {
		t.Errorf("recipients = %+v", env.Recipients)
	}
}

func TestRefusals(t *testing.T) {
	big := strings.Repeat(strings.Repeat("x", 70)+"\r\n", 20)
	tests := []struct {
		name string
		ep   Endpoint
		from string // local address to connect from
		send string
		want []string
	}{
		{
			name: "open relay: client outside allow_networks",
			ep:   Endpoint{Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}},
			from: "127.0.0.2",
			send: "EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nQUIT\r\n",
			want: []string{"554 5.7.1 Relay access denied", "221 "},
		},
		{
			name: "malformed recipient",
			ep:   Endpoint{Networks: loopback},
			send: "EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@@example.net>\r\nRCPT TO:<b@.net>\r\nQUIT\r\n",
			want: []string{"501 5.", "501 5.1.3 Bad address syntax <b@.net>"},
		},
		{
			name: "oversized message",
			ep:   Endpoint{Networks: loopback},
			send: "EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n" + big + ".\r\nQUIT\r\n",
			want: []string{"SIZE 1024", "552 5.3.4", "221 "},
		},
		{
			name: "too many recipients",
			ep:   Endpoint{Networks: loopback},
			send: "EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b1@x.net>\r\nRCPT TO:<b2@x.net>\r\nRCPT TO:<b3@x.net>\r\nRCPT TO:<b4@x.net>\r\nQUIT\r\n",
			want: []string{"452 4.5.3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := serve(t, tt.ep)
			var local net.Addr
			if tt.from != "" {
				local = &net.TCPAddr{IP: net.ParseIP(tt.from)}
			}
			out := dialog(t, "tcp", f.addr, local, tt.send)
			expectInOrder(t, out, tt.want)
			if n := len(f.records(t)); n != 0 {
				t.Errorf("%d messages spooled, want none", n)
			}
			entries, _ := os.ReadDir(filepath.Join(f.spool.Root(), "queue"))
			if len(entries) != 0 {
				t.Errorf("queue/ holds %d files, want none", len(entries))
			}
		})
	}
}

// SMTP smuggling (CVE-2023-51764 class): end-of-data look-alikes with bare
// LF or CR inside a message must not end it; the session holds exactly one
// message and the stored copy has only canonical line endings.
func TestSmuggling(t *testing.T) {
	for _, eod := range []string{"\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\n", "\r.\n", "\n.\r", "\r\n\x00.\r\n", "\r\n.\r\r\n"} {
		t.Run(fmt.Sprintf("%q", eod), func(t *testing.T) {
			f := serve(t, Endpoint{Networks: loopback})
			send := "EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n" +
				"Subject: s\r\n\r\nbefore" + eod +
				"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nsmuggled\r\n.\r\nQUIT\r\n"
			out := dialog(t, "tcp", f.addr, nil, send)
			if n := strings.Count(out, "queued as"); n != 1 {
				t.Fatalf("%d messages accepted, want 1:\n%s", n, out)
			}
			recs := f.records(t)
			for _, body := range recs {
				if !crlf.Canonical([]byte(body)) {
					t.Errorf("stored message has bare line endings: %q", body)
				}
				if !strings.Contains(body, "smuggled") {
					t.Errorf("the would-be second message is not in the body of the first: %q", body)
				}
			}
			if len(f.queued) != 1 || len(f.queued[0].Recipients) != 1 {
				t.Errorf("envelopes = %+v", f.queued)
			}
		})
	}
}

// A spool that cannot take the message gives 452 4.3.1, never 250.
func TestSpoolFailure(t *testing.T) {
	f := serve(t, Endpoint{Networks: loopback})
	if err := os.RemoveAll(filepath.Join(f.spool.Root(), "queue")); err != nil {
		t.Fatal(err)
	}
	out := dialog(t, "tcp", f.addr, nil, "EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n")
	if !strings.Contains(out, "452 4.3.1") || strings.Contains(out, "queued as") {
		t.Errorf("reply:\n%s", out)
	}
}

// The sendmail socket trusts the caller and records its uid.
func TestUnixSocketPeer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "submit.sock")
	f := serve(t, Endpoint{Address: sock, Sendmail: true})
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	out := dialog(t, "unix", sock, nil, "EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n")
	if !strings.Contains(out, "queued as") {
		t.Fatalf("reply:\n%s", out)
	}
	env := f.queued[0]
	if env.Origin.Kind != "sendmail" || env.Origin.UID == nil || *env.Origin.UID != os.Getuid() {
		t.Errorf("origin = %+v", env.Origin)
	}
	for _, body := range f.records(t) {
		if want := fmt.Sprintf("Received: by relay.test (Outbox, from userid %d)", os.Getuid()); !strings.HasPrefix(body, want) {
			t.Errorf("body starts %q, want %q", body[:min(60, len(body))], want)
		}
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := Listen(Endpoint{Address: sock})
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l, err = Listen(Endpoint{Address: sock})
	if err != nil {
		t.Fatalf("second Listen over a stale socket: %v", err)
	}
	// A socket someone still serves on is not taken over.
	if _, err := Listen(Endpoint{Address: sock}); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("Listen over a live socket: %v", err)
	}
	l.Close()
	// A regular file is never removed.
	os.WriteFile(sock, nil, 0o600)
	if _, err := Listen(Endpoint{Address: sock}); err == nil {
		t.Error("Listen replaced a regular file")
	}
}

// Lines far longer than RFC 5321's limit, as PHP's HTML mail sends them,
// are accepted and kept intact.
func TestLongLines(t *testing.T) {
	f := serveWith(t, Endpoint{Networks: loopback}, Options{Hostname: "relay.test", MaxMessageSize: 1 << 20})
	line := strings.Repeat("<td>x</td>", 10000) // 100,000 octets
	out := dialog(t, "tcp", f.addr, nil, "EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"+line+"\r\n.\r\nQUIT\r\n")
	if !strings.Contains(out, "queued as") {
		t.Fatalf("reply:\n%s", out)
	}
	for _, body := range f.records(t) {
		if !strings.Contains(body, "\r\n"+line+"\r\n") {
			t.Error("long line not kept intact")
		}
	}
}

// A default listener on an address the host lacks is told apart from a busy
// port, so the daemon can skip it.
func TestUnavailable(t *testing.T) {
	_, err := Listen(Endpoint{Address: "192.0.2.1:0"}) // TEST-NET-1: on no interface here
	if err == nil || !Unavailable(err) {
		t.Errorf("Listen on a foreign address: %v, want unavailable", err)
	}
	l, err := Listen(Endpoint{Address: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := Listen(Endpoint{Address: l.Addr().String()}); err == nil || Unavailable(err) {
		t.Errorf("Listen on a busy port: %v, want an error that is not 'unavailable'", err)
	}
}

// expectInOrder checks that the replies in out contain want, in order, and
// returns what follows the last one.
func expectInOrder(t *testing.T, out string, want []string) (rest string) {
	t.Helper()
	rest = out
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Errorf("reply lacks %q in order:\n%s", w, out)
			return ""
		}
		rest = rest[i+len(w):]
	}
	return rest
}

// A shutdown that comes before Serve began (SIGTERM right after the
// sockets were opened) still ends Serve: go-smtp's Shutdown closes only
// the listeners its Serve has registered, so Serve closes its own too.
func TestServeStoppedBeforeStart(t *testing.T) {
	sp, err := spool.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := New(sp, Options{Hostname: "relay.test"}, nil, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 50 {
		l, err := Listen(Endpoint{Address: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx, l, Endpoint{Address: "127.0.0.1:0"}) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return after its context was done")
		}
	}
}
