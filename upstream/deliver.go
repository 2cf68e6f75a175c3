package upstream

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/outboxmta/outbox/internal/crlf"
)

// Message is one delivery attempt's input.
type Message struct {
	ID         string    // queue ID, for logs only
	From       string    // reverse-path; "" is the null sender <>
	Recipients []string  // only the ones still to deliver
	Body       io.Reader // raw message (already CRLF, but canonicalized again on the way out)
	Size       int64     // for SIZE=, 0 if unknown
	UTF8       bool      // needs SMTPUTF8
	EightBit   bool      // BODY=8BITMIME

	// DSN parameters (RFC 3461) as the spool stores them, passed on when
	// the upstream offers DSN (and dropped, as RFC 3461 section 4.1 lets
	// a relay do, when it does not).
	DSNRet string         // RET=: "FULL", "HDRS" or ""
	EnvID  string         // ENVID=, decoded; "" for none
	DSN    []RecipientDSN // per recipient, in the order of Recipients; nil: none
}

// RecipientDSN holds a recipient's DSN parameters, as the spool stores
// them (spool.Recipient.DSNNotify and DSNOrcpt).
type RecipientDSN struct {
	Notify string // NOTIFY=: "NEVER" or a comma-separated set of SUCCESS, FAILURE, DELAY; "" for none
	Orcpt  string // ORCPT= as "addr-type;address" with the address decoded ("rfc822;a@example.org"); "" for none
}

// Deliver makes one attempt: MAIL, RCPT each recipient, DATA, on an idle
// connection (after RSET) or a new one (connect, TLS, EHLO, AUTH). It waits,
// on ctx, for a free connection when max_connections are busy.
//
// When the transaction gets as far as RCPT it returns one Result per
// recipient, in order, and a nil error: a recipient is Delivered only when
// the server accepted both its RCPT and the message; a 4xx to RCPT or DATA
// defers it, a 5xx fails it. A network failure during DATA defers the
// accepted recipients even though the server may have received the message:
// delivery is at least once.
//
// A failure of the attempt as a whole (connect, TLS, greeting, AUTH, MAIL,
// any 421, a network error before DATA) returns a nil slice and an *Error
// whose Temporary field says whether to retry.
//
// It returns as soon as the upstream answered: the connection goes back to
// the pool, or is closed with QUIT in the background (see release).
func (c *Client) Deliver(ctx context.Context, m *Message) ([]Result, error) {
	if len(m.Recipients) == 0 {
		return nil, nil
	}
	probe, err := c.held()
	if err != nil {
		return nil, err
	}
	if err := c.rate.wait(ctx); err != nil {
		return nil, err
	}
	s, err := c.acquire(ctx, m.ID, probe)
	if err != nil {
		return nil, err
	}
	res, err := s.send(m)
	c.release(s)
	return res, err
}

// send runs the mail transaction on an open session.
func (s *session) send(m *Message) ([]Result, error) {
	if strings.ContainsAny(m.From, "\r\n") {
		return nil, &Error{Op: "mail", Text: "invalid sender address: contains a line break"}
	}
	if limit, ok := s.sc.MaxMessageSize(); ok && limit > 0 && m.Size > int64(limit) {
		// Permanent: the same upstream will not take it later either.
		return nil, &Error{Op: "mail", Enhanced: "5.3.4",
			Text: fmt.Sprintf("message is %d bytes, larger than the %d bytes the upstream accepts (its SIZE limit)", m.Size, limit)}
	}
	opts := &smtp.MailOptions{Size: m.Size, UTF8: m.UTF8 || !isASCII(m.From)}
	opts.Return, opts.EnvelopeID = s.mailDSN(m)
	for _, r := range m.Recipients {
		opts.UTF8 = opts.UTF8 || !isASCII(r)
	}
	if ok, _ := s.sc.Extension("SMTPUTF8"); opts.UTF8 && !ok {
		// Permanent: the same upstream will not grow SMTPUTF8 by retrying,
		// and RFC 6531 forbids downgrading the addresses ourselves.
		return nil, &Error{Op: "mail", Text: "message needs SMTPUTF8 (non-ASCII addresses or headers) but the upstream does not support it"}
	}
	if m.EightBit {
		opts.Body = smtp.Body8BitMIME // go-smtp adds BODY=8BITMIME whenever offered anyway
		if ok, _ := s.sc.Extension("8BITMIME"); !ok {
			// Like Postfix by default: send as is rather than bounce or
			// rewrite; practically every server passes 8-bit data.
			s.log.Warn("upstream does not offer 8BITMIME; sending 8-bit message as is")
		}
	}
	s.msgs++
	s.utf8 = s.utf8 || opts.UTF8
	if err := s.sc.Mail(m.From, opts); err != nil {
		e := s.fail("mail", err)
		if r, ok := smtpReply(err); ok && r.code >= 500 && !wantsSetup(r) {
			e.Temporary = false
		}
		return nil, e
	}

	results := make([]Result, len(m.Recipients))
	var accepted []int
	for i, rcpt := range m.Recipients {
		results[i].Recipient = rcpt
		if strings.ContainsAny(rcpt, "\r\n") {
			results[i].Status = Failed
			results[i].Text = "invalid recipient address: contains a line break"
			continue
		}
		err := s.sc.Rcpt(rcpt, s.rcptDSN(m, i))
		if err == nil {
			accepted = append(accepted, i) // Delivered only once DATA succeeds
			continue
		}
		r, ok := smtpReply(err)
		if !ok || r.code == 421 {
			return nil, s.fail("rcpt", err)
		}
		st := replyStatus(r.code)
		switch {
		case st == Delivered: // a 2xx other than 25x: no acceptance we understand
			st = Deferred
		case st == Failed && wantsSetup(r): // see Error
			st = Deferred
		}
		results[i] = Result{Recipient: rcpt, Status: st, Code: r.code, Enhanced: r.enhanced, Text: r.text}
	}
	if len(accepted) == 0 {
		return results, nil // close sends QUIT; no DATA without recipients
	}

	r, err := s.data(m.Body)
	st := Delivered
	if err != nil {
		if r.code == 421 {
			return nil, newError(s.ctx, "data", err)
		}
		// 4xx defers and 5xx fails. No reply at all (code 0: the
		// connection broke or the body could not be read) defers although
		// the server may have the message: delivery is at least once. A
		// 2xx here answered the DATA command instead of 354: try again.
		if st = replyStatus(r.code); st == Delivered {
			st = Deferred
		}
	}
	for _, i := range accepted {
		results[i] = Result{Recipient: results[i].Recipient, Status: st, Code: r.code, Enhanced: r.enhanced, Text: r.text}
	}
	s.log.Debug("transaction done", "status", st.String(), "code", r.code, "accepted", len(accepted), "recipients", len(results))
	return results, nil
}

// data sends DATA, the message and the final dot. It returns the final reply
// on success and otherwise the reply (or code 0 and error text) together
// with the error.
func (s *session) data(body io.Reader) (reply, error) {
	w, err := s.sc.Data()
	if err != nil {
		return s.dataError(err)
	}
	_, _, dataTimeout := s.c.timeouts()
	// go-smtp sets no deadline while we write the message (only for
	// commands and the final reply), so a stalled server would block us
	// forever.
	s.raw.SetWriteDeadline(time.Now().Add(dataTimeout))
	defer s.raw.SetWriteDeadline(time.Time{})

	// Canonical CRLF in, so that no bare CR or LF reaches the upstream:
	// textproto's DotWriter fixes bare LF but passes bare CR through, and
	// mixed line endings are how SMTP smuggling works.
	src := &readErr{r: body}
	cw := crlf.NewWriter(w)
	if body != nil {
		if s.copyBuf == nil {
			s.copyBuf = make([]byte, 32<<10)
		}
		_, err = io.CopyBuffer(cw, src, s.copyBuf)
	}
	if err == nil {
		err = cw.Close()
	}
	if src.err != nil {
		// Never end DATA on a truncated message: drop the connection
		// instead, so the server discards the transaction.
		s.broken = true
		s.raw.Close()
		return reply{text: clean("reading message: " + src.err.Error())}, src.err
	}
	if err != nil {
		return s.dataError(err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		if r, ok := smtpReply(err); ok && r.code/100 == 2 {
			// go-smtp wants exactly 250, but any 2xx to the final dot
			// means the server took the message; sending it again
			// would duplicate it.
			return r, nil
		}
		return s.dataError(err)
	}
	return parseReply(250, resp.StatusText), nil
}

func (s *session) dataError(err error) (reply, error) {
	e := s.fail("data", err)
	return reply{code: e.Code, enhanced: e.Enhanced, text: e.Text}, err
}

// readErr remembers a read error so that it can be told from a write error
// after io.Copy.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
