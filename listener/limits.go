package listener

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Limits keep one client, or many, from taking the listener for itself:
//
//   - max_sessions and max_sessions_per_client are enforced by limitListener,
//     below go-smtp: a connection over a limit is answered
//     "421 4.7.0 <hostname> Too many connections, try again later" and
//     closed without reaching go-smtp. Unix socket clients have no IP
//     address and count only towards max_sessions.
//   - max_errors is counted by the session: the error replies that its
//     methods pass through session.replied (MAIL, RCPT, DATA/BDAT).
//     When a session reaches it, the reply is "421 4.7.0 <hostname> Too
//     many errors, closing connection" and the connection is closed.
//     go-smtp's own protocol errors (unknown commands, 501 5.5.2 for an
//     unparsable MAIL or RCPT argument, 502/503 for commands out of order)
//     never reach the session and are not counted; go-smtp itself hangs up
//     after its fourth unknown or unparsable command.
//   - timeout is go-smtp's read and write deadline: each command must
//     arrive within it, and since go-smtp sets no new deadline while it
//     reads a message, so must the whole message after DATA (each chunk
//     after its BDAT). A client that is too slow gets "421 4.4.2 Idle
//     timeout". It is set when the endpoint starts serving.

// DefaultTimeout is the timeout of an endpoint that sets none, as
// Postfix's smtpd_timeout.
const DefaultTimeout = 5 * time.Minute

// limitListener admits connections while the endpoint's session limits
// allow, and counts them until they are closed. The limits are read at
// every Accept, so Reconfigure changes them for new connections.
type limitListener struct {
	net.Listener
	policy   func() Endpoint
	hostname func() string
	log      *slog.Logger

	mu        sync.Mutex
	total     int
	perClient map[netip.Addr]int
	refused   int       // since lastLog
	lastLog   time.Time // of a refusal
}

func newLimitListener(l net.Listener, policy func() Endpoint, hostname func() string, log *slog.Logger) *limitListener {
	return &limitListener{Listener: l, policy: policy, hostname: hostname, log: log, perClient: map[netip.Addr]int{}}
}

// Accept returns the next connection within the limits; the others are
// refused here.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ep, ip := l.policy(), clientIP(c)
		if limit := l.admit(ep, ip); limit != "" {
			l.refuse(c, ep, ip, limit)
			continue
		}
		return &limitConn{Conn: c, release: func() { l.release(ip) }}, nil
	}
}

// admit counts a new connection from ip (invalid for unix sockets) and
// returns "", or the name of the limit it would exceed.
func (l *limitListener) admit(ep Endpoint, ip netip.Addr) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ep.MaxSessions > 0 && l.total >= ep.MaxSessions {
		return "max_sessions"
	}
	if ip.IsValid() && ep.MaxSessionsPerClient > 0 && l.perClient[ip] >= ep.MaxSessionsPerClient {
		return "max_sessions_per_client"
	}
	l.total++
	if ip.IsValid() {
		l.perClient[ip]++
	}
	return ""
}

func (l *limitListener) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if ip.IsValid() {
		if l.perClient[ip]--; l.perClient[ip] <= 0 {
			delete(l.perClient, ip)
		}
	}
}

// refuse answers a connection over a limit and closes it. A client that
// waits for the greeting, as SMTP clients do, reads the 421 before the
// connection closes. An implicit TLS client could not read it, and is
// only disconnected.
func (l *limitListener) refuse(c net.Conn, ep Endpoint, ip netip.Addr, limit string) {
	if ep.TLS != TLSImplicit {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "421 4.7.0 %s Too many connections, try again later\r\n", l.hostname())
	}
	c.Close()

	// A flood would write one line per connection; say it once in a while.
	l.mu.Lock()
	l.refused++
	n, now := l.refused, time.Now()
	logIt := now.Sub(l.lastLog) >= 10*time.Second
	if logIt {
		l.refused, l.lastLog = 0, now
	}
	l.mu.Unlock()
	if logIt {
		client := c.RemoteAddr().String()
		if ip.IsValid() {
			client = ip.String()
		}
		l.log.Warn("connection refused: too many connections", "client", client, "limit", limit, "refused", n)
	}
}

// clientIP is the address a TCP connection comes from, and the zero Addr
// for a unix socket.
func clientIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// limitConn is an admitted connection; closing it frees its place.
type limitConn struct {
	net.Conn
	release func()
	once    sync.Once
}

// Close frees the place first, so that once a client sees the connection
// closed, a new one is admitted.
func (c *limitConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// NetConn returns the socket, as tls.Conn's method of the same name does.
func (c *limitConn) NetConn() net.Conn { return c.Conn }

// errTooManyErrors is the reply that ends a session at max_errors.
func errTooManyErrors(hostname string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message: hostname + " Too many errors, closing connection"}
}

// replied counts err if it is an error reply, and returns the reply to
// give: err, or once the session has had max_errors of them, the 421 that
// ends it. Session methods pass every error they return through it, e.g.
// with a deferred func() { err = s.replied(err) }().
//
// go-smtp offers no way to close a connection after a session method's
// reply, so the 421 is written to the connection here and the connection
// closed; go-smtp's own attempt to write the reply then fails quietly, and
// it ends the session at its next read. The session answers nothing else
// from then on, in case go-smtp had already buffered more commands, a
// message above all.
func (s *session) replied(err error) error {
	if s.hungUp {
		return errTooManyErrors(s.opts.Hostname)
	}
	se, ok := err.(*smtp.SMTPError)
	if !ok || se.Code < 400 || se == errAborted {
		return err
	}
	s.errReplies++
	if s.ep.MaxErrors <= 0 || s.errReplies < s.ep.MaxErrors {
		return err
	}
	s.hungUp = true
	reply := errTooManyErrors(s.opts.Hostname)
	s.server.log.Warn("too many errors, closing connection", "client", s.peer.addr, "errors", s.errReplies, "last", se.Message)
	nc := s.conn.Conn()
	nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	e := reply.EnhancedCode
	fmt.Fprintf(nc, "%d %d.%d.%d %s\r\n", reply.Code, e[0], e[1], e[2], reply.Message)
	nc.Close()
	return reply
}
