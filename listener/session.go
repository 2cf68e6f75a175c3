package listener

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/outboxmta/outbox/internal/address"
	"github.com/outboxmta/outbox/internal/crlf"
	"github.com/outboxmta/outbox/spool"
)

type backend struct {
	server *Server
	addr   string // the endpoint's Address
}

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{server: b.server, opts: b.server.opts.Load(), ep: b.server.endpoint(b.addr),
		conn: c, peer: peerOf(c.Conn())}, nil
}

// session is one SMTP session; go-smtp calls its methods one at a time.
type session struct {
	server *Server
	opts   *Options // as they were when the session began
	ep     Endpoint
	conn   *smtp.Conn
	peer   peer

	env *spool.Envelope // the transaction in progress; nil before MAIL

	user         string // authenticated user; "" before AUTH
	authFailures int

	errReplies int  // error replies so far, see replied
	hungUp     bool // closed at max_errors
}

var (
	errRelayDenied = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
		Message: "Relay access denied: this client may not submit mail here"}
	errSpool = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1},
		Message: "Insufficient system storage: message not queued, try again later"}
	// ErrSpoolFull is the reply when the spool's disk is full or below its
	// free-space reserve. The sendmail command recognises it to say so.
	ErrSpoolFull = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1},
		Message: "Insufficient system storage: mail spool full, try again later"}
)

// spoolFailed logs why a message could not be queued and returns the reply.
// A full spool is worth its own words: it is the admin's to fix, and it
// clears by itself as queued mail drains.
func (s *session) spoolFailed(err error) error {
	if errors.Is(err, spool.ErrNoSpace) {
		s.server.log.Error("cannot queue message: spool full", "client", s.peer.addr, "spool", s.server.spool.Root(), "err", err)
		return ErrSpoolFull
	}
	s.server.log.Error("cannot queue message", "client", s.peer.addr, "err", err)
	return errSpool
}

func badAddress(addr string, err error) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3},
		Message: fmt.Sprintf("Bad address syntax <%s>: %v", addr, err)}
}

func (s *session) Mail(from string, opts *smtp.MailOptions) (err error) {
	defer func() { err = s.replied(err) }()
	if err := s.mayRelay(); err != nil {
		s.server.log.Warn("relay denied", "client", s.peer.addr, "helo", s.conn.Hostname(), "from", from, "code", err.Code)
		return err
	}
	// go-smtp has already refused paths without a domain (501 5.5.2), as
	// RFC 5321 asks; what it lets through is checked more closely here.
	if from != "" {
		if err := address.Valid(from); err != nil {
			return badAddress(from, err)
		}
	}
	s.env = &spool.Envelope{From: from, Origin: s.origin()}
	if opts != nil {
		s.env.EightBit = opts.Body == smtp.Body8BitMIME
		s.env.UTF8 = opts.UTF8
		s.env.DSNRet = string(opts.Return)
		s.env.EnvID = opts.EnvelopeID
	}
	return nil
}

func (s *session) origin() spool.Origin {
	o := spool.Origin{Kind: "smtp", Client: s.peer.addr, UID: s.peer.uid, Helo: s.conn.Hostname(), User: s.user}
	if s.ep.Sendmail {
		o.Kind = "sendmail"
	}
	return o
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) (err error) {
	defer func() { err = s.replied(err) }()
	if s.env == nil {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "MAIL first"}
	}
	if err := address.Valid(to); err != nil {
		return badAddress(to, err)
	}
	r := spool.Recipient{Status: spool.Pending}
	if opts != nil {
		notify := make([]string, len(opts.Notify))
		for i, n := range opts.Notify {
			notify[i] = string(n)
		}
		r.DSNNotify = strings.Join(notify, ",")
		if opts.OriginalRecipient != "" {
			r.DSNOrcpt = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
		}
	}
	targets := s.opts.Aliases.Expand(to)
	if r.DSNOrcpt == "" && (len(targets) != 1 || targets[0] != to) {
		r.DSNOrcpt = "rfc822;" + to // DSNs should name the address the client used
	}
	for _, t := range targets {
		r.Addr = t
		s.env.Recipients = append(s.env.Recipients, r)
	}
	return nil
}

// Data receives a message from DATA or BDAT (go-smtp uses this method for
// both); see lineends.go for what a message may contain.
func (s *session) Data(r io.Reader) (err error) {
	defer func() { err = s.replied(err) }()
	if s.hungUp { // the connection is closed: spool nothing
		return errTooManyErrors(s.opts.Hostname)
	}
	env := s.env
	w, err := s.server.spool.Create(spool.Queue)
	if err != nil {
		return s.spoolFailed(err)
	}
	if err := s.receive(w, &messageReader{r: r, strict: !s.peer.local(s.ep.LocalNetworks)}); err != nil {
		w.Abort()
		if reply := messageRefused(err); reply != nil {
			if reply != errAborted {
				s.server.log.Info("message refused", "client", s.peer.addr, "reply", reply.Message)
			}
			return reply
		}
		return s.spoolFailed(err)
	}
	if err := w.Commit(env); err != nil {
		return s.spoolFailed(err)
	}
	s.server.log.Info("queued", "id", env.ID, "from", env.From, "size", env.Size,
		"nrcpt", len(env.Recipients), "client", s.peer.addr, env.Origin.UIDAttr(), userAttr(env.Origin.User), "origin", env.Origin.Kind)
	if s.server.onQueued != nil {
		s.server.onQueued(env)
	}
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + env.ID}
}

// receive writes the Received: header and the message, with canonical line
// endings, to w.
func (s *session) receive(w *spool.Writer, r io.Reader) error {
	if _, err := io.WriteString(w, s.received(w.ID())); err != nil {
		return err
	}
	cw := crlf.NewWriter(w)
	if _, err := io.Copy(cw, r); err != nil {
		return err
	}
	return cw.Close()
}

// received returns the trace header Outbox adds, in the form Postfix uses,
// so that admins reading a message's headers find what they know.
func (s *session) received(id string) string {
	now := time.Now().Format(time.RFC1123Z)
	var b strings.Builder
	if s.peer.unix && s.peer.uid != nil {
		return LocalReceived(s.opts.Hostname, *s.peer.uid, id, time.Now())
	} else {
		helo := s.conn.Hostname()
		fmt.Fprintf(&b, "Received: from %s (%s)", sanitize(helo), s.peer.addr)
		proto := "ESMTP"
		if st, ok := s.tlsState(); ok {
			fmt.Fprintf(&b, "\r\n\t(using %s with cipher %s)", tlsVersion(st.Version), tls.CipherSuiteName(st.CipherSuite))
			proto += "S"
		}
		if s.user != "" {
			fmt.Fprintf(&b, "\r\n\t(Authenticated sender: %s)", sanitize(s.user))
			proto += "A"
		}
		fmt.Fprintf(&b, "\r\n\tby %s (Outbox) with %s id %s", s.opts.Hostname, proto, id)
	}
	if len(s.env.Recipients) == 1 {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", s.env.Recipients[0].Addr)
	}
	fmt.Fprintf(&b, "; %s\r\n", now)
	return b.String()
}

// sanitize keeps a client-chosen HELO name from breaking the header.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x21 || r == 0x7f || r == '(' || r == ')' {
			return '_'
		}
		return r
	}, s)
}

func (s *session) Reset()        { s.env = nil }
func (s *session) Logout() error { return nil }

// LocalReceived is the Received: header for mail a local user submitted
// through the sendmail command, as Postfix writes it.
func LocalReceived(hostname string, uid int, id string, now time.Time) string {
	return fmt.Sprintf("Received: by %s (Outbox, from userid %d)\r\n\tid %s; %s\r\n", hostname, uid, id, now.Format(time.RFC1123Z))
}
