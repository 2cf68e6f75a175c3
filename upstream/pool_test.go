package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/outboxmta/outbox/config"
)

// reuseCfg is testCfg with connection reuse on.
func reuseCfg(host string, port int) config.Upstream {
	c := testCfg(host, port, "none")
	c.IdleTimeout.Duration = time.Minute
	return c
}

func msg(n int, rcpts ...string) *Message {
	if len(rcpts) == 0 {
		rcpts = []string{"b@example.net"}
	}
	from := fmt.Sprintf("m%d@example.org", n)
	return &Message{ID: fmt.Sprint("q", n), From: from, Recipients: rcpts, Body: strings.NewReader("Subject: " + from + "\r\n\r\nhi\r\n")}
}

// mustDeliver delivers m and wants every recipient delivered.
func mustDeliver(t *testing.T, c *Client, m *Message) {
	t.Helper()
	res, err := deliver(t, c, m)
	if err != nil {
		t.Fatalf("Deliver %s: %v", m.ID, err)
	}
	for _, r := range res {
		if r.Status != Delivered {
			t.Fatalf("Deliver %s: %+v", m.ID, r)
		}
	}
}

// wantConns checks how many connections carried the server's transactions,
// in order.
func wantConns(t *testing.T, be *backend, want ...int) {
	t.Helper()
	txns, _, _, _ := be.snapshot()
	var got []int
	for _, x := range txns {
		got = append(got, x.conn)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("transactions arrived on connections %v, want %v", got, want)
	}
}

func TestConnectionReuse(t *testing.T) {
	tests := []struct {
		name        string
		maxMessages int
		idle        time.Duration
		want        []int // connection of each of 5 messages
	}{
		{"one connection", 100, time.Minute, []int{1, 1, 1, 1, 1}},
		{"max_messages_per_connection", 2, time.Minute, []int{1, 1, 2, 2, 3}},
		{"one message per connection", 1, time.Minute, []int{1, 2, 3, 4, 5}},
		{"idle_timeout 0: no reuse", 100, 0, []int{1, 2, 3, 4, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := &backend{}
			host, port := startServer(t, be, serverOpts{})
			cfg := testCfg(host, port, "none")
			cfg.IdleTimeout.Duration = tt.idle
			cfg.MaxMessagesPerConnection = tt.maxMessages
			c := New(cfg, "client.test", nil)
			defer c.Close()
			for i := range 5 {
				mustDeliver(t, c, msg(i))
			}
			wantConns(t, be, tt.want...)
			txns, mails, _, _ := be.snapshot()
			for i, x := range txns {
				if want := fmt.Sprintf("m%d@example.org", i); x.from != want || len(x.rcpts) != 1 || mails != 5 {
					t.Errorf("transaction %d from %s rcpts %v (of %d MAIL)", i, x.from, x.rcpts, mails)
				}
			}
		})
	}
}

func TestIdleTimeoutClosesConnection(t *testing.T) {
	be := &backend{}
	// The server would wait longer than the test for the client.
	host, port := startServer(t, be, serverOpts{readTimeout: time.Minute})
	cfg := testCfg(host, port, "none")
	cfg.IdleTimeout.Duration = 20 * time.Millisecond
	c := New(cfg, "client.test", nil)
	defer c.Close()
	mustDeliver(t, c, msg(0))
	be.waitLogouts(t, 1) // the client closed the idle connection
	mustDeliver(t, c, msg(1))
	wantConns(t, be, 1, 2)
}

func TestCloseQuitsIdleConnections(t *testing.T) {
	be := &backend{}
	host, port := startServer(t, be, serverOpts{readTimeout: time.Minute})
	c := New(reuseCfg(host, port), "client.test", nil)
	mustDeliver(t, c, msg(0))
	c.Close()
	be.waitLogouts(t, 1)
	// Still usable, without keeping connections.
	mustDeliver(t, c, msg(1))
	be.waitLogouts(t, 2)
	wantConns(t, be, 1, 2)
}

// TestServerClosedIdleConnection: the server ends an idle connection (its
// own idle timeout: 421 and close). The next message goes out on a new
// connection without an error.
func TestServerClosedIdleConnection(t *testing.T) {
	be := &backend{}
	host, port := startServer(t, be, serverOpts{readTimeout: 50 * time.Millisecond})
	c := New(reuseCfg(host, port), "client.test", nil)
	defer c.Close()
	mustDeliver(t, c, msg(0))
	be.waitLogouts(t, 1)
	mustDeliver(t, c, msg(1))
	wantConns(t, be, 1, 2)
}

// dropper is a raw server that serves one transaction per connection and
// then misbehaves as told on the next command: "close" hangs up (after the
// 250 to the final dot: the message was taken), "421" answers 421 and
// hangs up. It counts connections and messages.
type dropper struct {
	how   string
	mu    sync.Mutex
	conns int
	msgs  []string
}

func (d *dropper) handle(c net.Conn, done <-chan struct{}) {
	d.mu.Lock()
	d.conns++
	d.mu.Unlock()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "220 mx.test\r\n")
	sent := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.Fields(line + " x")[0])
		switch {
		case verb == "EHLO":
			io.WriteString(c, "250-mx.test\r\n250 8BITMIME\r\n")
		case verb == "QUIT":
			io.WriteString(c, "221 bye\r\n")
			return
		case sent && d.how == "421":
			io.WriteString(c, "421 4.4.2 idle too long\r\n")
			return
		case verb == "DATA":
			body, ok := readData(c, br)
			if !ok {
				return
			}
			d.mu.Lock()
			d.msgs = append(d.msgs, body)
			d.mu.Unlock()
			io.WriteString(c, "250 2.0.0 queued\r\n")
			sent = true
			if d.how == "close" {
				return
			}
		default:
			io.WriteString(c, "250 ok\r\n")
		}
	}
}

// TestDeadIdleConnectionRetried: a connection that died while idle costs
// no attempt, and the message whose DATA was answered is never sent again.
func TestDeadIdleConnectionRetried(t *testing.T) {
	for _, how := range []string{"close", "421"} {
		t.Run(how, func(t *testing.T) {
			d := &dropper{how: how}
			host, port := fakeServer(t, d.handle)
			c := New(reuseCfg(host, port), "client.test", nil)
			defer c.Close()
			for i := range 3 {
				mustDeliver(t, c, msg(i))
			}
			d.mu.Lock()
			defer d.mu.Unlock()
			if d.conns != 3 || len(d.msgs) != 3 {
				t.Errorf("server saw %d connections, %d messages; want 3 and 3", d.conns, len(d.msgs))
			}
			for i, m := range d.msgs {
				if want := fmt.Sprintf("m%d@", i); !strings.Contains(m, want) {
					t.Errorf("message %d = %q, want %s", i, m, want)
				}
			}
		})
	}
}

// TestDeadIdleConnectionRetriedOnce: when the new connection fails too,
// that is the attempt's error.
func TestDeadIdleConnectionRetriedOnce(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &dropper{how: "close"}
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		l.Close() // nobody listens any more
		d.handle(c, nil)
		c.Close()
	}()
	port := l.Addr().(*net.TCPAddr).Port
	c := New(reuseCfg("127.0.0.1", port), "client.test", nil)
	defer c.Close()
	mustDeliver(t, c, msg(0))
	_, err = deliver(t, c, msg(1))
	if e := asError(t, err); e.Op != "connect" || !e.Temporary {
		t.Errorf("error = %+v, want temporary connect error", e)
	}
}

// Test421MidSession: a 421 on a reused connection defers that message (no
// silent retry: the server is going away, not idle), and the next message
// gets a new connection.
func Test421MidSession(t *testing.T) {
	be := &backend{rcptErr: map[string]error{
		"busy@example.net": &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "shutting down"},
	}}
	host, port := startServer(t, be, serverOpts{})
	c := New(reuseCfg(host, port), "client.test", nil)
	defer c.Close()
	mustDeliver(t, c, msg(0))
	res, err := deliver(t, c, msg(1, "a@example.net", "busy@example.net"))
	if e := asError(t, err); res != nil || e.Code != 421 || !e.Temporary {
		t.Errorf("Deliver = %+v, %+v; want temporary 421", res, e)
	}
	mustDeliver(t, c, msg(2))
	wantConns(t, be, 1, 2)
	be.waitLogouts(t, 1)
}

// TestMixedResultsOnReusedConnection: per-recipient answers stay with their
// message, and a transaction without DATA leaves nothing behind for the
// next one on the same connection.
func TestMixedResultsOnReusedConnection(t *testing.T) {
	be := &backend{rcptErr: map[string]error{
		"later@example.net": &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "mailbox busy"},
		"gone@example.net":  &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"},
	}}
	host, port := startServer(t, be, serverOpts{})
	c := New(reuseCfg(host, port), "client.test", nil)
	defer c.Close()
	steps := []struct {
		rcpts []string
		want  []Status
	}{
		{[]string{"ok1@example.net", "gone@example.net"}, []Status{Delivered, Failed}},
		{[]string{"later@example.net", "gone@example.net"}, []Status{Deferred, Failed}}, // no DATA
		{[]string{"later@example.net", "ok2@example.net"}, []Status{Deferred, Delivered}},
	}
	for i, st := range steps {
		res, err := deliver(t, c, msg(i, st.rcpts...))
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		for j, r := range res {
			if r.Recipient != st.rcpts[j] || r.Status != st.want[j] {
				t.Errorf("message %d result %d = %+v, want %v", i, j, r, st.want[j])
			}
		}
	}
	txns, mails, _, _ := be.snapshot()
	if len(txns) != 2 || mails != 3 {
		t.Fatalf("server saw %d transactions, %d MAIL; want 2 and 3", len(txns), mails)
	}
	if got := strings.Join(txns[1].rcpts, ","); txns[1].from != "m2@example.org" || got != "ok2@example.net" {
		t.Errorf("second transaction from %s to %s, want m2@example.org to ok2@example.net only", txns[1].from, got)
	}
	wantConns(t, be, 1, 1)
}

// TestMaxConnections: with max_connections = 1, a second attempt waits
// while the first is in DATA; it gives up when its context ends without
// having connected, and a later one reuses the connection.
func TestMaxConnections(t *testing.T) {
	inData, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	be := &backend{dataHook: func([]byte) error {
		once.Do(func() { close(inData) })
		<-release
		return nil
	}}
	host, port := startServer(t, be, serverOpts{})
	cfg := reuseCfg(host, port)
	cfg.MaxConnections = 1
	c := New(cfg, "client.test", nil)
	defer c.Close()

	first := make(chan error, 1)
	go func() {
		_, err := deliver(t, c, msg(0))
		first <- err
	}()
	<-inData
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Deliver(ctx, msg(1))
	e := asError(t, err)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(e.Text, "max_connections = 1") {
		t.Errorf("waiting attempt: %v, want deadline exceeded while waiting for a connection", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first attempt: %v", err)
	}
	mustDeliver(t, c, msg(2))
	if conns, _ := be.counts(); conns != 1 {
		t.Errorf("server saw %d connections, want 1", conns)
	}
	_, mails, _, _ := be.snapshot()
	if mails != 2 {
		t.Errorf("server saw %d MAIL, want 2 (the waiting attempt must not have started)", mails)
	}
}

// TestConcurrentDeliveries: many attempts at once share max_connections
// connections, and each message arrives once.
func TestConcurrentDeliveries(t *testing.T) {
	be := &backend{}
	host, port := startServer(t, be, serverOpts{})
	cfg := reuseCfg(host, port)
	cfg.MaxConnections = 3
	c := New(cfg, "client.test", nil)
	defer c.Close()
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() { mustDeliver(t, c, msg(i)) })
	}
	wg.Wait()
	txns, _, _, _ := be.snapshot()
	seen := map[string]bool{}
	for _, x := range txns {
		if seen[x.from] {
			t.Errorf("%s arrived twice", x.from)
		}
		seen[x.from] = true
	}
	if conns, _ := be.counts(); len(txns) != 30 || conns > 3 {
		t.Errorf("server saw %d messages on %d connections; want 30 on at most 3", len(txns), conns)
	}
}

// A reused connection carries no MAIL parameters over from the message
// before: each MAIL says what its own message needs. And plain mail never
// follows SMTPUTF8 mail on one connection: Exim 4.96 keeps SMTPUTF8 for
// the rest of a connection, RSET or not, and so takes such plain mail as
// SMTPUTF8 mail (Received: "with utf8esmtpsa"; a next hop without
// SMTPUTF8 would then refuse it).
func TestReusedConnectionMailParameters(t *testing.T) {
	be := &backend{}
	host, port := startServer(t, be, serverOpts{utf8: true})
	c := New(reuseCfg(host, port), "client.test", nil)
	defer c.Close()
	first := msg(0)
	first.UTF8, first.EightBit = true, true
	mustDeliver(t, c, first)
	mustDeliver(t, c, msg(1))
	mustDeliver(t, c, msg(2))
	wantConns(t, be, 1, 2, 2)
	txns, _, _, _ := be.snapshot()
	if !txns[0].opts.UTF8 || txns[0].opts.Body != smtp.Body8BitMIME {
		t.Errorf("first MAIL: %+v, want SMTPUTF8 and BODY=8BITMIME", txns[0].opts)
	}
	for _, x := range txns[1:] {
		if x.opts.UTF8 {
			t.Errorf("MAIL FROM:<%s> carries SMTPUTF8 over from the first: %+v", x.from, x.opts)
		}
	}
}
