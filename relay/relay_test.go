package relay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/outboxmta/outbox/config"
	"github.com/outboxmta/outbox/internal/testutil"
	"github.com/outboxmta/outbox/upstream"
)

// server is an in-process go-smtp upstream that counts its connections and
// records the recipients of every message it took.
type server struct {
	addr    string
	conns   atomic.Int64
	mailErr atomic.Pointer[smtp.SMTPError] // answer to MAIL FROM, nil: accept
	rcptErr map[string]*smtp.SMTPError

	mu    sync.Mutex
	got   [][]string // recipients of each message taken
	users []string   // the AUTH user of each message taken, "" if none
}

func startServer(t *testing.T) *server {
	t.Helper()
	s := &server{rcptErr: map[string]*smtp.SMTPError{}}
	srv := smtp.NewServer(s)
	srv.Domain = "upstream.test"
	srv.AllowInsecureAuth = true
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr().String()
	go srv.Serve(&countingListener{Listener: l, n: &s.conns})
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *server) taken() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]string(nil), s.got...)
}

func (s *server) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{s: s}, nil }

type session struct {
	s    *server
	to   []string
	user string
}

func (ss *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (ss *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if pass != "secret-"+user {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
		}
		ss.user = user
		return nil
	}), nil
}

func (ss *session) Mail(string, *smtp.MailOptions) error {
	if e := ss.s.mailErr.Load(); e != nil {
		return e
	}
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if e := ss.s.rcptErr[to]; e != nil {
		return e
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	io.Copy(io.Discard, r)
	ss.s.mu.Lock()
	ss.s.got = append(ss.s.got, ss.to)
	ss.s.users = append(ss.s.users, ss.user)
	ss.s.mu.Unlock()
	return nil
}

func (ss *session) Reset()        { ss.to = nil }
func (ss *session) Logout() error { return nil }

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// closedAddr returns a loopback address nobody listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func testUpstream(t *testing.T, name, addr string) Upstream {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	cfg := config.Upstream{Name: name, Host: host, Port: p, TLS: "none", Auth: "none",
		ConnectTimeout: config.Duration{Duration: 5 * time.Second}}
	return Upstream{Name: name, Host: host, Client: upstream.New(cfg, "client.test", nil)}
}

func message(id string, rcpts ...string) *upstream.Message {
	return &upstream.Message{ID: id, From: "app@example.com", Recipients: rcpts,
		Body: strings.NewReader("Subject: t\r\n\r\nhi\r\n")}
}

func newGroup(t *testing.T, log *testutil.SyncBuffer, ups ...Upstream) *Group {
	t.Helper()
	var w io.Writer = io.Discard
	if log != nil {
		w = log
	}
	return New(ups, slog.New(slog.NewTextHandler(w, nil)))
}

func wantDelivered(t *testing.T, res []upstream.Result, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("Route: %v", err)
	}
	for _, r := range res {
		if r.Status != upstream.Delivered {
			t.Errorf("%s: %s %d %s", r.Recipient, r.Status, r.Code, r.Text)
		}
	}
}

func TestFailover(t *testing.T) {
	refuse421 := &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "shutting down"}
	tests := []struct {
		name  string
		first func(t *testing.T) (addr string, s *server)
	}{
		{"unreachable", func(t *testing.T) (string, *server) { return closedAddr(t), nil }},
		{"421 to MAIL", func(t *testing.T) (string, *server) {
			s := startServer(t)
			s.mailErr.Store(refuse421)
			return s.addr, s
		}},
		{"421 to RCPT after an accepted one", func(t *testing.T) (string, *server) {
			s := startServer(t)
			s.rcptErr["c@example.net"] = refuse421
			return s.addr, s
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, first := tt.first(t)
			second := startServer(t)
			g := newGroup(t, nil, testUpstream(t, "first", addr), testUpstream(t, "second", second.addr))
			via, res, err := g.Route(context.Background(), message("M1", "b@example.net", "c@example.net"))
			wantDelivered(t, res, err)
			if via.Name != "second" {
				t.Errorf("delivered via %q, want second", via.Name)
			}
			if got := second.taken(); len(got) != 1 || len(got[0]) != 2 {
				t.Errorf("second took %v, want one message for both recipients", got)
			}
			if first != nil && len(first.taken()) != 0 {
				t.Errorf("first took %v too", first.taken())
			}
		})
	}
}

// Once the first upstream answered a recipient, the attempt ends there,
// whatever the answer: the second upstream is never asked, so nobody gets
// the message twice.
func TestNoFailoverAfterRecipientReply(t *testing.T) {
	tests := []struct {
		name    string
		mailErr *smtp.SMTPError
		rcptErr *smtp.SMTPError // for c@example.net
		want    map[string]upstream.Status
		wantErr bool
	}{
		{name: "450 for one recipient",
			rcptErr: &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "mailbox busy"},
			want:    map[string]upstream.Status{"b@example.net": upstream.Delivered, "c@example.net": upstream.Deferred}},
		{name: "550 for one recipient",
			rcptErr: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"},
			want:    map[string]upstream.Status{"b@example.net": upstream.Delivered, "c@example.net": upstream.Failed}},
		{name: "550 to MAIL is final",
			mailErr: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "sender refused"},
			wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, second := startServer(t), startServer(t)
			if tt.rcptErr != nil {
				first.rcptErr["c@example.net"] = tt.rcptErr
			}
			first.mailErr.Store(tt.mailErr)
			g := newGroup(t, nil, testUpstream(t, "first", first.addr), testUpstream(t, "second", second.addr))
			via, res, err := g.Route(context.Background(), message("M1", "b@example.net", "c@example.net"))
			if via.Name != "first" {
				t.Errorf("answered by %q, want first", via.Name)
			}
			if n := second.conns.Load(); n != 0 {
				t.Errorf("second upstream got %d connection(s)", n)
			}
			if tt.wantErr {
				var ue *upstream.Error
				if !errors.As(err, &ue) || ue.Temporary {
					t.Fatalf("err = %v, want a permanent *upstream.Error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res {
				if r.Status != tt.want[r.Recipient] {
					t.Errorf("%s: %s, want %s", r.Recipient, r.Status, tt.want[r.Recipient])
				}
			}
		})
	}
}

// A first upstream that failed at connection level is skipped while on
// hold, tried again after it, and used again once it answers; its going
// down and coming back are logged once each.
func TestHoldOff(t *testing.T) {
	first, second := startServer(t), startServer(t)
	first.mailErr.Store(&smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "try later"})
	var log testutil.SyncBuffer
	g := newGroup(t, &log, testUpstream(t, "first", first.addr), testUpstream(t, "second", second.addr))
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	g.now = func() time.Time { return now }
	route := func(id string) Via {
		t.Helper()
		via, res, err := g.Route(context.Background(), message(id, "b@example.net"))
		wantDelivered(t, res, err)
		return via
	}

	if via := route("M1"); via.Name != "second" {
		t.Fatalf("M1 via %s, want second", via.Name)
	}
	if n := first.conns.Load(); n != 1 {
		t.Fatalf("first got %d connections, want 1", n)
	}
	now = now.Add(holdMin / 2)
	if via := route("M2"); via.Name != "second" {
		t.Fatalf("M2 via %s, want second", via.Name)
	}
	if n := first.conns.Load(); n != 1 {
		t.Errorf("first got %d connections during its hold, want still 1", n)
	}

	// After the hold it is tried again; still failing, it is held longer.
	now = now.Add(holdMin)
	route("M3")
	if n := first.conns.Load(); n != 2 {
		t.Errorf("first got %d connections after its hold, want 2", n)
	}
	now = now.Add(holdMin + time.Second)
	route("M4")
	if n := first.conns.Load(); n != 2 {
		t.Errorf("first was tried before its doubled hold ended (%d connections)", n)
	}

	first.mailErr.Store(nil)
	now = now.Add(holdMax)
	if via := route("M5"); via.Name != "first" {
		t.Errorf("M5 via %s, want first (back up)", via.Name)
	}
	if via := route("M6"); via.Name != "first" {
		t.Errorf("M6 via %s, want first", via.Name)
	}
	out := log.String()
	if n := strings.Count(out, "upstream down"); n != 1 {
		t.Errorf("%d 'upstream down' lines, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "upstream up"); n != 1 {
		t.Errorf("%d 'upstream up' lines, want 1:\n%s", n, out)
	}
}

// Refused credentials keep the shortest hold however often they repeat
// and whatever failed before: the client already holds them for a minute,
// and the sysadmin who fixed the password should not wait five.
func TestAuthRefusalHoldDoesNotGrow(t *testing.T) {
	g := newGroup(t, nil, testUpstream(t, "a", closedAddr(t)))
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	g.now = func() time.Time { return now }
	u := g.all[0]
	for _, tt := range []struct {
		err  error
		want time.Duration
	}{
		{&upstream.Error{Op: "auth", Code: 535, Enhanced: "5.7.8", Temporary: true}, holdMin},
		{&upstream.Error{Op: "auth", Code: 535, Enhanced: "5.7.8", Temporary: true}, holdMin},
		{&upstream.Error{Op: "auth", Code: 535, Enhanced: "5.7.8", Temporary: true}, holdMin},
		{&upstream.Error{Op: "connect", Temporary: true}, 2 * holdMin},
		{&upstream.Error{Op: "auth", Code: 454, Temporary: true}, 4 * holdMin},
		{&upstream.Error{Op: "auth", Code: 535, Enhanced: "5.7.8", Temporary: true}, holdMin},
	} {
		now = now.Add(u.hold + time.Second)
		g.fail(u, tt.err)
		if got := u.until.Sub(now); got != tt.want {
			t.Errorf("after %v: hold %v, want %v", tt.err, got, tt.want)
		}
	}
}

// With every upstream of a message on hold, the one whose hold ends first
// is tried anyway: a single upstream is never skipped.
func TestAllOnHold(t *testing.T) {
	a, b := startServer(t), startServer(t)
	busy := &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "try later"}
	a.mailErr.Store(busy)
	b.mailErr.Store(busy)
	g := newGroup(t, nil, testUpstream(t, "a", a.addr), testUpstream(t, "b", b.addr))
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	g.now = func() time.Time { return now }
	if _, _, err := g.Route(context.Background(), message("M1", "x@example.net")); err == nil {
		t.Fatal("delivered through two busy upstreams")
	}
	// Both holds end together: the first in the file is tried, and its
	// hold starts again.
	now = now.Add(time.Second)
	b.mailErr.Store(nil)
	if via, _, err := g.Route(context.Background(), message("M2", "x@example.net")); via.Name != "a" || err == nil {
		t.Fatalf("M2 via %s, err %v; want a failing again", via.Name, err)
	}
	now = now.Add(time.Second)
	via, res, err := g.Route(context.Background(), message("M3", "x@example.net"))
	wantDelivered(t, res, err)
	if via.Name != "b" || a.conns.Load() != 2 || b.conns.Load() != 2 {
		t.Errorf("M3 via %s with %d+%d connections; want b, whose hold ends first", via.Name, a.conns.Load(), b.conns.Load())
	}
}

// account is an upstream on addr that logs in as user and is reserved for
// senders.
func account(t *testing.T, name, addr, user string, senders ...string) Upstream {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	cfg := config.Upstream{Name: name, Host: host, Port: p, TLS: "none", Auth: "plain",
		Username: user, Password: "secret-" + user, AllowPlaintextAuth: true,
		ConnectTimeout: config.Duration{Duration: 5 * time.Second}}
	return Upstream{Name: name, Host: host, Senders: senders, Client: upstream.New(cfg, "client.test", nil)}
}

// Two accounts on one smarthost, chosen by envelope sender; everything
// else, bounces included, takes the upstream without senders.
func TestRouteBySender(t *testing.T) {
	smarthost := startServer(t)
	g := newGroup(t, nil,
		account(t, "shop", smarthost.addr, "shop", "shop.example", "@Shop.Example.net"),
		account(t, "billing", smarthost.addr, "billing", "billing@example.org", "example.com"),
		account(t, "default", smarthost.addr, "relay"),
		account(t, "billing-backup", smarthost.addr, "backup", "billing@example.org"),
	)
	for _, tt := range []struct {
		from string
		want string // upstream name, and the user it logs in as
		user string
	}{
		{"orders@shop.example", "shop", "shop"},
		{"Orders@SHOP.example.NET", "shop", "shop"},
		{"billing@Example.org", "billing", "billing"},
		{"anyone@example.com", "billing", "billing"},
		{"other@example.org", "default", "relay"},
		{"orders@sub.shop.example", "default", "relay"},
		{"", "default", "relay"},
	} {
		m := message("M", "b@example.net")
		m.From = tt.from
		via, res, err := g.Route(context.Background(), m)
		wantDelivered(t, res, err)
		smarthost.mu.Lock()
		user := smarthost.users[len(smarthost.users)-1]
		smarthost.mu.Unlock()
		if via.Name != tt.want || user != tt.user {
			t.Errorf("<%s> went via %s as %q, want %s as %q", tt.from, via.Name, user, tt.want, tt.user)
		}
	}
}

// Mail for a reserved upstream fails over only among the upstreams that
// list its sender, never to the default one.
func TestRoutedFailoverStaysInGroup(t *testing.T) {
	backup, other := startServer(t), startServer(t)
	g := newGroup(t, nil,
		account(t, "billing", closedAddr(t), "billing", "example.org"),
		account(t, "default", other.addr, "relay"),
		account(t, "billing-backup", backup.addr, "billing", "example.org"),
	)
	m := message("M1", "b@example.net")
	m.From = "billing@example.org"
	via, res, err := g.Route(context.Background(), m)
	wantDelivered(t, res, err)
	if via.Name != "billing-backup" || other.conns.Load() != 0 {
		t.Errorf("via %s, default upstream got %d connection(s)", via.Name, other.conns.Load())
	}

	g = newGroup(t, nil,
		account(t, "billing", closedAddr(t), "billing", "example.org"),
		account(t, "default", other.addr, "relay"),
	)
	if _, _, err := g.Route(context.Background(), m); err == nil || other.conns.Load() != 0 {
		t.Errorf("err = %v, default upstream got %d connection(s); want a deferral and none", err, other.conns.Load())
	}
}

type closer struct {
	Deliverer
	closed bool
}

func (c *closer) Close() error { c.closed = true; return nil }

// Closing the group closes every member's client, reserved ones too.
func TestClose(t *testing.T) {
	a, b := &closer{}, &closer{}
	g := New([]Upstream{{Name: "a", Client: a}, {Name: "b", Client: b, Senders: []string{"example.org"}}}, nil)
	if err := g.Close(); err != nil || !a.closed || !b.closed {
		t.Errorf("Close: %v, closed %v %v", err, a.closed, b.closed)
	}
}
