package listener

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxmta/outbox/config"
)

// The listener's defaults are the config's, which are what the daemon
// passes; the values live in both packages.
func TestLimitDefaultsMatchConfig(t *testing.T) {
	if DefaultTimeout != config.DefaultListenerTimeout {
		t.Errorf("DefaultTimeout = %s, config.DefaultListenerTimeout = %s", DefaultTimeout, config.DefaultListenerTimeout)
	}
}

// testClient is a client connection driven line by line, for dialogs whose
// timing matters: it sends nothing before it has read what it waits for.
type testClient struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

// dialClient connects to addr from the address from ("" for any; a unix
// socket when addr is a path). Every read has a generous deadline, so a
// broken server fails the test instead of hanging it.
func dialClient(t *testing.T, addr, from string) *testClient {
	t.Helper()
	network, d := "tcp", net.Dialer{}
	if filepath.IsAbs(addr) {
		network = "unix"
	} else if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &testClient{t: t, c: c, r: bufio.NewReader(c)}
}

// reply reads one reply, all of its lines.
func (c *testClient) reply() string {
	c.t.Helper()
	var b strings.Builder
	for {
		line, err := c.r.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			if b.Len() == 0 {
				return "EOF"
			}
			return b.String()
		}
		if len(line) < 4 || line[3] != '-' {
			return b.String()
		}
	}
}

func (c *testClient) cmd(line string) string {
	c.t.Helper()
	if _, err := io.WriteString(c.c, line+"\r\n"); err != nil {
		c.t.Fatalf("send %q: %v", line, err)
	}
	return c.reply()
}

// rest reads until the server closes the connection.
func (c *testClient) rest() string {
	c.t.Helper()
	b, err := io.ReadAll(c.r)
	if err != nil {
		c.t.Fatalf("reading to the end: %v (got %q)", err, b)
	}
	return string(b)
}

const tooManyConnections = "421 4.7.0 relay.test Too many connections, try again later\r\n"

// One step of a connection-limit scenario: open a connection (named by
// conn) from an address, or end one with QUIT.
type connStep struct {
	conn    string
	from    string // local address; "" for the default
	quit    bool
	refused bool // the connection is answered 421 and closed
}

func TestSessionLimits(t *testing.T) {
	tests := []struct {
		name  string
		ep    Endpoint
		unix  bool
		steps []connStep
	}{
		{
			name: "max_sessions",
			ep:   Endpoint{Networks: loopback, MaxSessions: 2},
			steps: []connStep{
				{conn: "a"}, {conn: "b"},
				{conn: "c", refused: true},
				{conn: "a", quit: true},
				{conn: "d"},
				{conn: "e", refused: true},
			},
		},
		{
			name: "max_sessions_per_client counts per IP address",
			ep:   Endpoint{Networks: loopback, MaxSessions: 10, MaxSessionsPerClient: 2},
			steps: []connStep{
				{conn: "a1", from: "127.0.0.2"}, {conn: "a2", from: "127.0.0.2"},
				{conn: "a3", from: "127.0.0.2", refused: true},
				{conn: "b1", from: "127.0.0.3"}, {conn: "b2", from: "127.0.0.3"},
				{conn: "b3", from: "127.0.0.3", refused: true},
				{conn: "a1", quit: true},
				{conn: "a4", from: "127.0.0.2"},
				{conn: "a5", from: "127.0.0.2", refused: true},
			},
		},
		{
			name: "max_sessions applies over all clients",
			ep:   Endpoint{Networks: loopback, MaxSessions: 3, MaxSessionsPerClient: 2},
			steps: []connStep{
				{conn: "a1", from: "127.0.0.2"}, {conn: "a2", from: "127.0.0.2"},
				{conn: "b1", from: "127.0.0.3"},
				{conn: "b2", from: "127.0.0.3", refused: true},
				{conn: "c1", from: "127.0.0.4", refused: true},
			},
		},
		{
			name: "unix socket clients are exempt from the per-client limit",
			ep:   Endpoint{MaxSessions: 3, MaxSessionsPerClient: 1},
			unix: true,
			steps: []connStep{
				{conn: "a"}, {conn: "b"}, {conn: "c"},
				{conn: "d", refused: true},
				{conn: "b", quit: true},
				{conn: "e"},
			},
		},
		{
			name:  "zero is no limit",
			ep:    Endpoint{Networks: loopback},
			steps: []connStep{{conn: "a"}, {conn: "b"}, {conn: "c"}, {conn: "d"}, {conn: "e"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.unix {
				tt.ep.Address = filepath.Join(t.TempDir(), "smtp.sock")
			}
			f := serve(t, tt.ep)
			open := map[string]*testClient{}
			for i, st := range tt.steps {
				if st.quit {
					c := open[st.conn]
					if r := c.cmd("QUIT"); !strings.HasPrefix(r, "221 ") {
						t.Fatalf("step %d: QUIT on %s: %q", i, st.conn, r)
					}
					if r := c.rest(); r != "" {
						t.Fatalf("step %d: after QUIT on %s: %q", i, st.conn, r)
					}
					delete(open, st.conn)
					continue
				}
				c := dialClient(t, f.addr, st.from)
				if st.refused {
					if r := c.rest(); r != tooManyConnections {
						t.Fatalf("step %d: connection %s got %q, want %q and the connection closed", i, st.conn, r, tooManyConnections)
					}
					continue
				}
				if r := c.reply(); !strings.HasPrefix(r, "220 relay.test ") {
					t.Fatalf("step %d: connection %s got %q, want the greeting", i, st.conn, r)
				}
				open[st.conn] = c
			}
			// The sessions that were let in work.
			for name, c := range open {
				if r := c.cmd("EHLO client.test"); !strings.HasPrefix(r, "250-") {
					t.Errorf("EHLO on %s: %q", name, r)
				}
			}
		})
	}
}

func TestMaxErrors(t *testing.T) {
	const (
		hello = "EHLO x\r\nMAIL FROM:<a@example.com>\r\n"
		// A complete message after the limit: it must never be spooled,
		// even though it reaches the server in the same packet.
		good = "RSET\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nSubject: s\r\n\r\nhi\r\n.\r\nQUIT\r\n"
	)
	tooMany := "421 4.7.0 relay.test Too many errors, closing connection"
	tests := []struct {
		name   string
		ep     Endpoint
		from   string
		send   string
		want   []string // in order
		queued bool     // else nothing is spooled and the connection ends with want's last line
	}{
		{
			name: "bad recipients",
			ep:   Endpoint{Networks: loopback, MaxErrors: 3},
			send: hello + "RCPT TO:<b@@x.net>\r\nRCPT TO:<c@.net>\r\nRCPT TO:<d@x..net>\r\n" + good,
			want: []string{"501 5.1.3", "501 5.1.3", tooMany},
		},
		{
			name: "the count survives RSET",
			ep:   Endpoint{Networks: loopback, MaxErrors: 3},
			send: hello + "RCPT TO:<b@@x.net>\r\nRSET\r\nMAIL FROM:<a@@x.net>\r\nMAIL FROM:<a@x.net>\r\nRCPT TO:<c@.net>\r\n" + good,
			want: []string{"501 5.1.3", "250 2.0.0 Session reset", "501 5.1.3", "250 ", tooMany},
		},
		{
			name: "relay refusals",
			ep:   Endpoint{Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, MaxErrors: 2},
			from: "127.0.0.2",
			send: "EHLO x\r\nMAIL FROM:<a@example.com>\r\nMAIL FROM:<a@example.com>\r\n" + good,
			want: []string{"554 5.7.1", tooMany},
		},
		{
			name: "refused messages",
			ep:   Endpoint{Networks: loopback, LocalNetworks: []netip.Prefix{}, MaxErrors: 2},
			send: hello + "RCPT TO:<b@@x.net>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nbare\nLF\r\n.\r\n" + good,
			want: []string{"501 5.1.3", "250 ", "354 ", tooMany},
		},
		{
			name:   "below the limit",
			ep:     Endpoint{Networks: loopback, MaxErrors: 3},
			send:   hello + "RCPT TO:<b@@x.net>\r\nRCPT TO:<c@.net>\r\n" + good,
			want:   []string{"501 5.1.3", "501 5.1.3", "queued as", "221 "},
			queued: true,
		},
		{
			name:   "zero is no limit",
			ep:     Endpoint{Networks: loopback},
			send:   hello + strings.Repeat("RCPT TO:<b@@x.net>\r\n", 20) + good,
			want:   []string{"501 5.1.3", "queued as", "221 "},
			queued: true,
		},
		{
			// go-smtp answers what it cannot parse itself; those replies
			// never reach the session and are not counted.
			name:   "go-smtp's syntax errors are not counted",
			ep:     Endpoint{Networks: loopback, MaxErrors: 2},
			send:   hello + "RCPT TO:<root>\r\nRCPT TO:<b@x.net\r\nRCPT TO:<root>\r\n" + good,
			want:   []string{"501 5.5.2", "501 5.5.2", "501 5.5.2", "queued as", "221 "},
			queued: true,
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
			rest := expectInOrder(t, out, tt.want)
			if t.Failed() {
				return
			}
			if n := len(f.records(t)); tt.queued != (n == 1) {
				t.Errorf("%d messages spooled:\n%s", n, out)
			}
			if !tt.queued {
				// The 421 is the last thing the client hears, and then the
				// connection closes (dialog reads to EOF).
				if strings.Count(rest, "\n") != 1 || strings.Count(out, "421 ") != 1 {
					t.Errorf("more after the 421:\n%s", out)
				}
			}
		})
	}
}

// A client that says nothing is disconnected with 421 4.4.2 after the
// timeout, while a session that keeps talking on the same listener
// completes its message.
func TestTimeout(t *testing.T) {
	f := serve(t, Endpoint{Networks: loopback, Timeout: 300 * time.Millisecond})
	idle := dialClient(t, f.addr, "")
	if r := idle.reply(); !strings.HasPrefix(r, "220 ") {
		t.Fatalf("greeting: %q", r)
	}
	if r := idle.cmd("EHLO idle.test"); !strings.HasPrefix(r, "250-") {
		t.Fatalf("EHLO: %q", r)
	}

	out := dialog(t, "tcp", f.addr, nil, "EHLO busy.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nSubject: s\r\n\r\nhi\r\n.\r\nQUIT\r\n")
	if !strings.Contains(out, "queued as") || !strings.Contains(out, "221 ") {
		t.Errorf("active session:\n%s", out)
	}

	if r := idle.rest(); !strings.HasPrefix(r, "421 4.4.2 ") {
		t.Errorf("idle session ended with %q, want 421 4.4.2", r)
	}
	if n := len(f.records(t)); n != 1 {
		t.Errorf("%d messages spooled, want 1", n)
	}
}
