package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/outboxmta/outbox/config"
	"github.com/outboxmta/outbox/internal/address"
	"github.com/outboxmta/outbox/sendmail"
)

// sendmailSMTP is sendmail -bs: one SMTP session on standard input and
// output, which is how Symfony Mailer, SwiftMailer and Drupal call sendmail
// by default. Each message of the session is completed and submitted like
// one given on standard input (prepare, submit), with MAIL FROM as -f and
// the RCPT TO addresses as the recipients, and gets 250 only once it is
// durable; a failure to queue it is 451 with the reason. The exit status
// is 0 whatever the session's replies were, as with Postfix.
func sendmailSMTP(ctx context.Context, cfg *config.Config, opts *sendmail.Options, e env) int {
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &bsSession{ctx: ctx, cfg: cfg, opts: opts}, nil
	}))
	srv.Domain = cfg.Hostname
	srv.MaxMessageBytes = int64(cfg.MaxMessageSize)
	srv.MaxRecipients = cfg.MaxRecipients
	srv.MaxLineLength = 1 << 20 // as the listener: applications' long HTML lines
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	srv.ErrorLog = log.New(e.stderr, "sendmail: ", 0)
	// No ReadTimeout: standard input has no deadlines, and the session
	// belongs to the one program that started it.
	conn := &stdioConn{r: e.stdin, w: e.stdout, closed: make(chan struct{})}
	if err := srv.Serve(&oneConnListener{conn: conn}); err != nil && !errors.Is(err, net.ErrClosed) {
		fmt.Fprintln(e.stderr, "sendmail:", err)
		return sendmail.ExSoftware
	}
	return 0
}

// bsSession is one -bs session; it keeps the transaction in progress.
type bsSession struct {
	ctx  context.Context
	cfg  *config.Config
	opts *sendmail.Options // the command line: -F, -N, -V, -R, -B

	from   string
	mail   *smtp.MailOptions
	rcpts  []string
	notify map[string]string
}

func (s *bsSession) Reset() {
	s.from, s.mail, s.rcpts, s.notify = "", nil, nil, nil
}

func (s *bsSession) Logout() error { return nil }

func (s *bsSession) Mail(from string, opts *smtp.MailOptions) error {
	if from != "" {
		if err := address.Valid(address.Qualify(from, s.cfg.Domain)); err != nil {
			return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 7}, Message: "Bad sender address: " + err.Error()}
		}
	}
	s.from, s.mail = from, opts
	return nil
}

func (s *bsSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	a := address.Qualify(to, s.cfg.Domain)
	if err := address.Valid(a); err != nil {
		return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad recipient address: " + err.Error()}
	}
	s.rcpts = append(s.rcpts, to)
	if opts != nil && len(opts.Notify) > 0 {
		n := make([]string, len(opts.Notify))
		for i, v := range opts.Notify {
			n[i] = string(v)
		}
		if s.notify == nil {
			s.notify = map[string]string{}
		}
		s.notify[strings.ToLower(a)] = strings.Join(n, ",")
	}
	return nil
}

func (s *bsSession) Data(r io.Reader) error {
	// go-smtp has undone the dot-stuffing, ended the message at CRLF.CRLF
	// and enforces max_message_size (552) while it is read.
	msg, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	prep, err := prepare(s.cfg, msg, sendmail.Params{
		Sender: s.from, SenderSet: true, FullName: s.opts.FullName, ArgRecipients: s.rcpts,
	})
	if err == nil {
		o := *s.opts
		if s.mail != nil {
			if s.mail.Return != "" {
				o.DSNReturn = string(s.mail.Return)
			}
			if s.mail.EnvelopeID != "" {
				o.EnvID = s.mail.EnvelopeID
			}
			if s.mail.Body == smtp.Body8BitMIME {
				o.BodyType = "8BITMIME"
			}
			prep.UTF8 = prep.UTF8 || s.mail.UTF8
		}
		err = submit(s.ctx, s.cfg, submission{prep: prep, opts: &o, notify: s.notify})
	}
	if err != nil {
		return bsReply(err)
	}
	return nil
}

// bsReply turns the sendmail command's error into an SMTP reply: a
// temporary failure is 451 (the client tries again later), the rest are
// permanent.
func bsReply(err error) *smtp.SMTPError {
	var ee *sendmail.ExitError
	if !errors.As(err, &ee) {
		ee = &sendmail.ExitError{Code: sendmail.ExTempFail, Msg: err.Error()}
	}
	msg := strings.TrimPrefix(ee.Msg, "sendmail: ")
	switch ee.Code {
	case sendmail.ExTempFail, sendmail.ExIOErr, sendmail.ExSoftware, sendmail.ExConfig:
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: msg}
	case sendmail.ExNoUser:
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: msg}
	case sendmail.ExDataErr:
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: msg}
	}
	return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 3, 0}, Message: msg}
}

// stdioConn is a net.Conn over standard input and output.
type stdioConn struct {
	r         io.Reader
	w         io.Writer
	closeOnce sync.Once
	closed    chan struct{}
}

func (c *stdioConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *stdioConn) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c *stdioConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}
func (c *stdioConn) LocalAddr() net.Addr  { return stdioAddr{} }
func (c *stdioConn) RemoteAddr() net.Addr { return stdioAddr{} }

// Deadlines are not supported: go-smtp sets them only when the server has
// timeouts, and the client uses none.
func (c *stdioConn) SetDeadline(time.Time) error      { return nil }
func (c *stdioConn) SetReadDeadline(time.Time) error  { return nil }
func (c *stdioConn) SetWriteDeadline(time.Time) error { return nil }

type stdioAddr struct{}

func (stdioAddr) Network() string { return "stdio" }
func (stdioAddr) String() string  { return "stdin" }

// oneConnListener hands out its one connection, then reports itself
// closed once that connection is, which ends smtp.Server.Serve after the
// session.
type oneConnListener struct {
	conn   *stdioConn
	served bool // Serve calls Accept from one goroutine only
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if !l.served {
		l.served = true
		return l.conn, nil
	}
	<-l.conn.closed
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return stdioAddr{} }
