package upstream

// What TestTLSModes and TestAuth leave open: a STARTTLS downgrade (the
// server, or a man in the middle, stops advertising STARTTLS), a STARTTLS
// the server refuses, implicit TLS against a cleartext server, and every
// AUTH mechanism kept off a cleartext connection.

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outboxmta/outbox/internal/testutil"
)

// stripProxy forwards connections to a backend SMTP server; while strip is
// set it hides STARTTLS in the backend's EHLO replies, as a man in the
// middle downgrading the session would.
type stripProxy struct {
	strip atomic.Bool
}

func startStripProxy(t *testing.T, backendPort int) (*stripProxy, int) {
	t.Helper()
	p := &stripProxy{}
	backend := net.JoinHostPort("127.0.0.1", strconv.Itoa(backendPort))
	_, port := fakeServer(t, func(c net.Conn, done <-chan struct{}) {
		b, err := net.Dial("tcp", backend)
		if err != nil {
			return
		}
		defer b.Close()
		finished := make(chan struct{})
		defer close(finished)
		go func() {
			select {
			case <-done: // the test is over: unblock the copies
				c.Close()
				b.Close()
			case <-finished:
			}
		}()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.Copy(b, c)
			b.Close()
		}()
		if p.strip.Load() {
			// Line by line: once STARTTLS is hidden the session stays
			// cleartext, so every reply is a line.
			br := bufio.NewReader(b)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					break
				}
				if strings.EqualFold(strings.TrimSpace(line[min(4, len(line)):]), "STARTTLS") {
					line = line[:4] + "X-NOTHING\r\n"
				}
				if _, err := io.WriteString(c, line); err != nil {
					break
				}
			}
		} else {
			io.Copy(c, b)
		}
		c.Close()
		wg.Wait()
	})
	return p, port
}

// Once the upstream stops advertising STARTTLS, a client that has a
// password never sends it, and never sends the message in clear when TLS
// is required: the attempt fails as temporary, so the message stays
// queued. Only opportunistic TLS without credentials goes on in clear.
func TestSTARTTLSDowngrade(t *testing.T) {
	p := testutil.NewPKI(t, "Outbox Test CA")
	tests := []struct {
		name      string
		mode      string
		creds     bool
		wantOp    string // "" when the message is sent (in clear)
		wantText  string
		wantClear bool
	}{
		{name: "starttls with credentials", mode: "starttls", creds: true, wantOp: "starttls", wantText: "did not offer STARTTLS"},
		{name: "starttls without credentials", mode: "starttls", wantOp: "starttls", wantText: "did not offer STARTTLS"},
		{name: "opportunistic with credentials", mode: "opportunistic", creds: true, wantOp: "auth", wantText: "unencrypted"},
		{name: "opportunistic without credentials", mode: "opportunistic", wantClear: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := &backend{users: map[string]string{"user": "pw"}}
			// insecureAuth: the server would even take AUTH in clear, so
			// only the client's own rule keeps the password off the wire.
			_, srvPort := startServer(t, be, serverOpts{tls: "starttls", pki: p, insecureAuth: true})
			proxy, port := startStripProxy(t, srvPort)
			cfg := testCfg("127.0.0.1", port, tt.mode)
			cfg.CAFile = p.CAFile
			if tt.creds {
				cfg.Auth, cfg.Username, cfg.Password = "plain", "user", "pw"
			}
			msg := func() *Message {
				return &Message{From: "a@example.org", Recipients: []string{"b@example.net"}, Body: strings.NewReader("x\r\n")}
			}

			// Before: the proxy is transparent and TLS is negotiated.
			if res, err := deliver(t, New(cfg, "client.test", nil), msg()); err != nil || res[0].Status != Delivered {
				t.Fatalf("through the transparent proxy: %+v, %v", res, err)
			}
			txns, _, triesBefore, _ := be.snapshot()
			if len(txns) != 1 || !txns[0].tls {
				t.Fatalf("first delivery: %d transactions, TLS %v; want one over TLS", len(txns), len(txns) == 1 && txns[0].tls)
			}

			// After: STARTTLS is no longer advertised (a new Client, so
			// that no connection from before could be reused).
			proxy.strip.Store(true)
			var trace bytes.Buffer
			c := New(cfg, "client.test", nil)
			c.Trace = &trace
			res, err := deliver(t, c, msg())
			txns, mails, tries, _ := be.snapshot()
			if tries != triesBefore {
				t.Errorf("server saw %d more AUTH after the downgrade", tries-triesBefore)
			}
			if strings.Contains(trace.String(), "C: AUTH") {
				t.Errorf("AUTH sent after the downgrade:\n%s", trace.String())
			}
			if tt.wantClear {
				if err != nil || res[0].Status != Delivered || len(txns) != 2 || txns[1].tls {
					t.Errorf("opportunistic without credentials: %+v, %v; want delivered in clear", res, err)
				}
				return
			}
			e := asError(t, err)
			if e.Op != tt.wantOp || !e.Temporary || !strings.Contains(e.Text, tt.wantText) {
				t.Errorf("error = %+v, want temporary %s error containing %q", e, tt.wantOp, tt.wantText)
			}
			if mails != 1 || len(txns) != 1 {
				t.Errorf("MAIL sent after the downgrade (%d MAIL, %d transactions)", mails, len(txns))
			}
		})
	}
}

// A server that advertises STARTTLS but refuses it (454) gets neither the
// password nor the message, in either TLS mode that uses STARTTLS.
func TestSTARTTLSRefused(t *testing.T) {
	for _, mode := range []string{"starttls", "opportunistic"} {
		t.Run(mode, func(t *testing.T) {
			var mu sync.Mutex
			var seen []string
			host, port := fakeServer(t, func(c net.Conn, done <-chan struct{}) {
				c.SetDeadline(time.Now().Add(20 * time.Second))
				br := bufio.NewReader(c)
				io.WriteString(c, "220 mx.test\r\n")
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					verb := strings.ToUpper(strings.Fields(line + " x")[0])
					mu.Lock()
					seen = append(seen, verb)
					mu.Unlock()
					switch verb {
					case "EHLO":
						io.WriteString(c, "250-mx.test\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n")
					case "STARTTLS":
						io.WriteString(c, "454 4.7.0 TLS not available due to local problem\r\n")
					case "QUIT":
						io.WriteString(c, "221 bye\r\n")
						return
					default:
						io.WriteString(c, "250 ok\r\n")
					}
				}
			})
			cfg := testCfg(host, port, mode)
			cfg.Auth, cfg.Username, cfg.Password = "plain", "user", "pw"
			_, err := deliver(t, New(cfg, "client.test", nil), &Message{From: "a@example.org", Recipients: []string{"b@example.net"}, Body: strings.NewReader("x")})
			if e := asError(t, err); e.Op != "starttls" || !e.Temporary || e.Code != 454 {
				t.Errorf("error = %+v, want temporary starttls error with 454", e)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, v := range seen {
				if v == "AUTH" || v == "MAIL" || v == "RCPT" || v == "DATA" {
					t.Errorf("client sent %s after the refused STARTTLS (commands: %v)", v, seen)
				}
			}
		})
	}
}

// tls = "implicit" against a server that speaks cleartext SMTP: the
// handshake fails, temporarily, and nothing is sent in clear.
func TestImplicitTLSAgainstCleartext(t *testing.T) {
	be := &backend{users: map[string]string{"user": "pw"}}
	host, port := startServer(t, be, serverOpts{insecureAuth: true})
	cfg := testCfg(host, port, "implicit")
	cfg.Auth, cfg.Username, cfg.Password = "plain", "user", "pw"
	_, err := deliver(t, New(cfg, "client.test", nil), &Message{From: "a@example.org", Recipients: []string{"b@example.net"}, Body: strings.NewReader("x")})
	if e := asError(t, err); e.Op != "tls" || !e.Temporary || !strings.Contains(e.Text, "TLS handshake failed") {
		t.Errorf("error = %+v, want temporary tls handshake error", e)
	}
	if _, mails, tries, _ := be.snapshot(); mails != 0 || tries != 0 {
		t.Errorf("server saw %d MAIL and %d AUTH", mails, tries)
	}
}

// No mechanism is used on a cleartext connection unless
// allow_plaintext_auth says so, CRAM-MD5 included: the attempt fails as
// temporary before any AUTH command.
func TestAuthNeverInClear(t *testing.T) {
	for _, mech := range []string{"auto", "plain", "login", "cram-md5"} {
		for _, mode := range []string{"none", "opportunistic"} {
			t.Run(mech+"/"+mode, func(t *testing.T) {
				be := &backend{users: map[string]string{"user": "pw"}}
				host, port := startServer(t, be, serverOpts{insecureAuth: true}) // no STARTTLS
				cfg := testCfg(host, port, mode)
				cfg.Auth, cfg.Username, cfg.Password = mech, "user", "pw"
				var trace bytes.Buffer
				c := New(cfg, "client.test", nil)
				c.Trace = &trace
				_, err := deliver(t, c, &Message{From: "a@example.org", Recipients: []string{"b@example.net"}, Body: strings.NewReader("x")})
				if e := asError(t, err); e.Op != "auth" || !e.Temporary || !strings.Contains(e.Text, "unencrypted") {
					t.Errorf("error = %+v, want temporary auth error about an unencrypted connection", e)
				}
				if _, mails, tries, _ := be.snapshot(); mails != 0 || tries != 0 {
					t.Errorf("server saw %d MAIL and %d AUTH", mails, tries)
				}
				if strings.Contains(trace.String(), "C: AUTH") {
					t.Errorf("trace shows AUTH:\n%s", trace.String())
				}
			})
		}
	}
}
