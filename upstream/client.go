// Package upstream relays queued mail to a smarthost over SMTP.
//
// A Client makes one delivery attempt per Deliver call: MAIL, one RCPT per
// recipient, DATA, on a connection that is connected, encrypted, greeted
// and authenticated once and then reused for further messages (see
// pool.go). It reports each recipient's outcome separately, or an *Error
// when the attempt failed as a whole; the spool decides what to retry. See
// Error for how failures are classified as temporary or permanent.
//
// It is built on github.com/emersion/go-smtp's Client but does the
// cleartext part of STARTTLS itself (go-smtp offers STARTTLS only through
// NewClientStartTLS, which greets as "localhost" with its own 5 minute
// timeouts), and it does not use go-smtp's SendMail (stops at the first
// rejected recipient) or DebugWriter (copies AUTH secrets).
package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/outboxmta/outbox/config"
)

// Fallbacks for zero timeouts; config normally applies the same defaults
// (RFC 5321 section 4.5.3.2).
const (
	defaultConnectTimeout = 30 * time.Second
	defaultCommandTimeout = 5 * time.Minute
	defaultDataTimeout    = 10 * time.Minute
	// quitTimeout bounds the courtesy QUIT: a server slow to say goodbye
	// must not hold up the queue.
	quitTimeout = 10 * time.Second
)

// Client relays mail to one upstream. It keeps a few authenticated
// connections open between attempts (see pool.go) and is safe for
// concurrent use. Close it when done.
type Client struct {
	// Trace, if not nil, receives a protocol trace of every attempt, with
	// AUTH secrets and message data left out. Set it before first use.
	// Meant for `outbox check`: concurrent attempts interleave their lines.
	// A Client with a Trace does not reuse connections, so that each
	// attempt's dialogue is complete, QUIT included, when Deliver returns.
	Trace io.Writer
	// Tokens, if not nil, gives the bearer token for auth = "xoauth2" or
	// "oauthbearer", once per connection; nil reads it like a password.
	// Set it before first use.
	Tokens TokenSource

	cfg     config.Upstream
	hello   string
	log     *slog.Logger
	traceMu sync.Mutex
	connSeq atomic.Int64 // numbers connections in logs
	rate    *rateLimit   // nil: messages_per_minute = 0
	auth    authState

	pool
}

// New returns a Client for the upstream cfg, with defaults applied, that
// introduces itself as helloName. log may be nil.
func New(cfg config.Upstream, helloName string, log *slog.Logger) *Client {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if helloName == "" {
		helloName = "localhost"
	}
	name := cfg.Name
	if name == "" {
		name = cfg.Address()
	}
	c := &Client{
		cfg:   cfg,
		hello: helloName,
		log:   log.With("upstream", name),
	}
	c.pool.init(cfg)
	c.rate = newRateLimit(cfg.MessagesPerMinute)
	c.auth.now = time.Now
	return c
}

func (c *Client) timeouts() (connect, command, data time.Duration) {
	or := func(d config.Duration, def time.Duration) time.Duration {
		if d.Duration > 0 {
			return d.Duration
		}
		return def
	}
	return or(c.cfg.ConnectTimeout, defaultConnectTimeout),
		or(c.cfg.CommandTimeout, defaultCommandTimeout),
		or(c.cfg.DataTimeout, defaultDataTimeout)
}

// session is one connection to the upstream. Only one goroutine uses it
// at a time: the one delivering through it, or the pool's.
type session struct {
	c       *Client
	id      string // queue ID of the message being delivered, "" if none
	ctx     context.Context
	log     *slog.Logger // connLog, with the queue ID while delivering
	connLog *slog.Logger // with the upstream and the connection's number
	raw     net.Conn     // the TCP connection; closing it interrupts everything
	stop    func() bool  // stops the context watcher
	sc      *smtp.Client
	pg      *pregreeted // what sc reads from; reset talks to the server beneath it
	tls     *tlsInfo    // nil while in cleartext
	mech    string      // SASL mechanism used, "" if none
	broken  bool        // the connection is unusable: skip QUIT, never reuse
	// blind: Probe's second look at a certificate that failed to verify.
	// open skips verification and returns once TLS is up, so that nothing
	// (no EHLO over TLS, no credentials) goes over the unverified channel.
	blind   bool
	trace   *tracer
	capture *ehloCapture

	msgs int         // transactions started (MAIL sent) on this connection
	utf8 bool        // a MAIL with SMTPUTF8 was sent: never reused (see pool.go)
	idle *time.Timer // closes the session once idle too long, while pooled

	// Allocated on first use and kept for the connection's later
	// messages, so that a reused connection costs no per-message buffers.
	copyBuf []byte        // copies the message into DATA
	rsetBuf *bufio.Reader // reads the reply to reset's RSET
}

// open connects and gets s ready for MAIL: TLS, EHLO and AUTH as configured.
// On error s is closed but keeps what was learned, for Probe.
func (c *Client) open(ctx context.Context, s *session) (err error) {
	s.c = c
	s.connLog = c.log.With("conn", c.connSeq.Add(1))
	s.begin(ctx, s.id)
	connectTimeout, cmdTimeout, dataTimeout := c.timeouts()
	s.trace = c.tracer(s)

	mode := c.cfg.TLS
	var tlsCfg *tls.Config
	switch mode {
	case tlsImplicit, tlsStartTLS, tlsOpportunistic:
		if tlsCfg, err = c.tlsConfig(); err != nil {
			return &Error{Op: "tls-config", Temporary: true, Text: clean(err.Error()), Err: err}
		}
		if s.blind {
			tlsCfg = tlsCfg.Clone()
			tlsCfg.InsecureSkipVerify = true
		}
	case tlsNone:
	default:
		err := fmt.Errorf("unknown tls mode %q", mode)
		return &Error{Op: "tls-config", Temporary: true, Text: err.Error(), Err: err}
	}

	if strings.ContainsAny(c.hello, "\r\n\t ") {
		return &Error{Op: "ehlo", Temporary: true, Text: "invalid hello name " + strconv.Quote(c.hello)}
	}

	addr := net.JoinHostPort(c.cfg.Host, strconv.Itoa(c.cfg.Port))
	d := net.Dialer{Timeout: connectTimeout}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return newError(ctx, "connect", err)
	}
	s.raw = raw
	s.watch()
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	s.log.Debug("connected", "remote", raw.RemoteAddr().String(), "tls", mode)
	if c.cfg.InsecureSkipVerify && mode != tlsNone {
		s.log.Warn("TLS certificate verification is disabled (insecure_skip_verify): the connection can be intercepted")
	}

	conn := raw
	if mode == tlsImplicit {
		tc, err := s.handshake(tlsCfg, cmdTimeout)
		if err != nil {
			return s.tlsError("tls", err)
		}
		conn = tc
	}
	conn = s.tap(conn)

	// We read the greeting ourselves, and on STARTTLS connections also do
	// EHLO and STARTTLS, so that our timeouts and hello name apply from the
	// first byte; go-smtp then starts at EHLO (see pregreeted).
	br := bufio.NewReader(conn)
	tp := textproto.NewReader(br)
	conn.SetDeadline(time.Now().Add(cmdTimeout))
	if _, _, err := tp.ReadResponse(220); err != nil {
		s.broken = true
		return newError(ctx, "greeting", err)
	}

	var tc *tls.Conn
	if mode == tlsStartTLS || mode == tlsOpportunistic {
		if tc, err = s.startTLS(conn, tp, br, tlsCfg, cmdTimeout); err != nil {
			return err
		}
	}
	if s.blind {
		if s.tls == nil {
			return &Error{Op: "starttls", Temporary: true, Text: "server no longer offers STARTTLS"}
		}
		return nil
	}
	conn.SetDeadline(time.Time{})
	// Whatever the server sent after the last reply we read (normally
	// nothing) still belongs to go-smtp, except across STARTTLS, where
	// startTLS made sure there was none.
	var leftover []byte
	if tc != nil {
		conn = s.tap(tc)
	} else {
		leftover, _ = br.Peek(br.Buffered())
	}
	s.pg = &pregreeted{Conn: conn, pending: append([]byte("220 ready\r\n"), leftover...)}
	s.sc = smtp.NewClient(s.pg)
	s.sc.CommandTimeout = cmdTimeout
	s.sc.SubmissionTimeout = dataTimeout
	if err := s.sc.Hello(c.hello); err != nil {
		if _, ok := smtpReply(err); !ok {
			s.broken = true
		}
		return newError(ctx, "ehlo", err)
	}
	return s.auth()
}

// startTLS runs EHLO and STARTTLS on the cleartext connection conn. It
// returns nil and no error when the server offers no STARTTLS and the mode
// allows cleartext.
func (s *session) startTLS(conn net.Conn, tp *textproto.Reader, br *bufio.Reader, cfg *tls.Config, timeout time.Duration) (*tls.Conn, error) {
	_, msg, err := s.cmd(conn, tp, 250, "EHLO "+s.c.hello)
	var offered bool
	switch r, isReply := smtpReply(err); {
	case err == nil:
		offered = hasExtension(msg, "STARTTLS")
	case isReply && (r.code == 500 || r.code == 502):
		// An SMTP server without EHLO has no STARTTLS either.
	default:
		if !isReply {
			s.broken = true
		}
		return nil, newError(s.ctx, "ehlo", err)
	}
	if !offered {
		if s.c.cfg.TLS == tlsStartTLS {
			s.cmd(conn, tp, 221, "QUIT")
			s.broken = true // we just said goodbye
			return nil, &Error{Op: "starttls", Temporary: true,
				Text: "server did not offer STARTTLS; refusing to send in clear (tls = \"starttls\" requires it)"}
		}
		s.log.Debug("server offers no STARTTLS, continuing in clear (tls = opportunistic)")
		return nil, nil
	}
	if _, _, err := s.cmd(conn, tp, 220, "STARTTLS"); err != nil {
		if _, ok := smtpReply(err); !ok {
			s.broken = true
		}
		return nil, newError(s.ctx, "starttls", err)
	}
	if br.Buffered() > 0 {
		// Cleartext that arrived after the 220 would be taken as coming
		// from inside TLS by a careless client (CVE-2011-0411 class).
		s.broken = true
		return nil, &Error{Op: "starttls", Temporary: true, Text: "server sent data after its STARTTLS reply (possible injection attack)"}
	}
	tc, err := s.handshake(cfg, timeout)
	if err != nil {
		return nil, s.tlsError("starttls", err)
	}
	return tc, nil
}

// cmd sends one command on the cleartext connection and reads the reply.
func (s *session) cmd(conn net.Conn, tp *textproto.Reader, expect int, line string) (int, string, error) {
	if _, err := io.WriteString(conn, line+"\r\n"); err != nil {
		return 0, "", err
	}
	return tp.ReadResponse(expect)
}

// hasExtension reports whether the EHLO reply text msg (lines after the
// first are extensions) lists ext.
func hasExtension(msg, ext string) bool {
	lines := strings.Split(msg, "\n")
	for _, l := range lines[1:] {
		kw, _, _ := strings.Cut(l, " ")
		if strings.EqualFold(kw, ext) {
			return true
		}
	}
	return false
}

// handshake starts TLS on the raw connection.
func (s *session) handshake(cfg *tls.Config, timeout time.Duration) (*tls.Conn, error) {
	tc, err := handshake(s.ctx, s.raw, cfg, timeout)
	if err != nil {
		return nil, err
	}
	info := describeTLS(tc.ConnectionState(), cfg)
	s.tls = &info
	s.log.Debug("TLS established", "version", info.Version, "cipher", info.CipherSuite,
		"server_name", cfg.ServerName, "peer", info.PeerSubject, "verified", info.Verified)
	if s.trace != nil {
		s.trace.note("TLS %s %s, peer %q, verified %v", info.Version, info.CipherSuite, info.PeerSubject, info.Verified)
	}
	return tc, nil
}

func (s *session) tlsError(op string, err error) *Error {
	s.broken = true
	e := newError(s.ctx, op, err)
	if s.ctx.Err() == nil {
		e.Text = clean(tlsErrorText(err))
	}
	return e
}

// tap returns conn, wrapped to feed the trace and the EHLO capture if
// either is wanted.
func (s *session) tap(conn net.Conn) net.Conn {
	if s.trace == nil && s.capture == nil {
		return conn
	}
	return &tapConn{Conn: conn, fn: func(fromServer bool, l []byte, n int) {
		if s.trace != nil {
			s.trace.line(fromServer, l, n)
		}
		if s.capture != nil {
			s.capture.line(fromServer, l, n)
		}
	}}
}

// close says QUIT if the connection is still good and closes it.
func (s *session) close() {
	if s.sc != nil && !s.broken {
		s.sc.CommandTimeout = min(s.sc.CommandTimeout, quitTimeout)
		s.sc.Quit() // only a courtesy: the outcome is already known
	}
	s.raw.Close()
	if s.stop != nil {
		s.stop()
		s.stop = nil
	}
}

// begin binds s to the attempt for the message id (may be ""): its
// context and its log attributes.
func (s *session) begin(ctx context.Context, id string) {
	s.ctx, s.id, s.log = ctx, id, s.connLog
	if id != "" {
		s.log = s.connLog.With("id", id)
	}
	if s.raw != nil {
		s.watch()
	}
}

// watch makes cancellation of the attempt's context close the connection,
// which unblocks whatever go-smtp or crypto/tls is waiting for; the error
// then reports the cause.
func (s *session) watch() {
	raw := s.raw
	s.stop = context.AfterFunc(s.ctx, func() { raw.Close() })
}

// end unbinds s from its attempt. A connection that the context closed is
// broken.
func (s *session) end() {
	if s.stop != nil && !s.stop() {
		s.broken = true
	}
	s.stop, s.id, s.log = nil, "", s.connLog
}

// pregreeted lets go-smtp's Client, which insists on reading a 220 greeting
// first, take over a connection whose greeting (and, with STARTTLS, whose
// whole cleartext phase) we have already handled. It replays a fixed
// greeting and then reads from the connection.
type pregreeted struct {
	net.Conn
	pending []byte
}

func (p *pregreeted) Read(b []byte) (int, error) {
	if len(p.pending) > 0 {
		n := copy(b, p.pending)
		p.pending = p.pending[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// fail turns err during op into an *Error and notes whether the connection
// is still worth a QUIT.
func (s *session) fail(op string, err error) *Error {
	if r, ok := smtpReply(err); !ok || r.code == 421 {
		s.broken = true
	}
	return newError(s.ctx, op, err)
}
