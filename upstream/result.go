package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-smtp"
)

// Status is the outcome of one delivery attempt for one recipient.
type Status int

const (
	// Delivered means the upstream accepted responsibility for the message.
	Delivered Status = iota
	// Deferred means try again later.
	Deferred
	// Failed means the upstream rejected the recipient for good: bounce.
	Failed
)

func (s Status) String() string {
	switch s {
	case Delivered:
		return "delivered"
	case Deferred:
		return "deferred"
	case Failed:
		return "failed"
	}
	return "Status(" + strconv.Itoa(int(s)) + ")"
}

// Result is the upstream's answer for one recipient.
type Result struct {
	Recipient string
	Status    Status
	Code      int    // SMTP reply code, 0 if none (e.g. network error)
	Enhanced  string // "5.1.1", "" if none
	Text      string // reply text or error text, safe to log and store
}

// Error is a failure of the whole attempt (connect, TLS, AUTH, MAIL FROM,
// DATA, ...): no recipient got an answer of its own.
//
// Classification policy (what Temporary says):
//
//   - Everything about reaching and setting up the upstream is temporary,
//     whatever the reply code: connect, TLS (including certificate
//     verification), greeting, EHLO, STARTTLS, credentials and AUTH. A 554
//     greeting or a 535 to AUTH says something about this host's
//     configuration or the upstream's state, not about the message, so the
//     message stays queued while an administrator fixes things; bouncing it
//     would lose mail (compare dma #111, months of bounces after an auth
//     failure).
//   - MAIL FROM: 4xx is temporary and 5xx permanent, except that replies
//     which say "authenticate / encrypt first" (530, or enhanced codes
//     X.7.8 to X.7.11) are temporary for the same reason as above; the same
//     exception makes such a RCPT rejection Deferred. A message that needs
//     SMTPUTF8 when the upstream lacks it is permanent: retrying
//     cannot help.
//   - 421 at any point, a network error outside DATA, and cancellation are
//     temporary.
//
// Per-recipient answers (RCPT and the DATA reply) are reported as Results,
// not as an Error; see Client.Deliver.
type Error struct {
	Op        string // "rate-limit", "connect", "tls-config", "tls", "greeting", "ehlo", "starttls", "credentials", "auth", "mail", "rcpt", "data"
	Code      int    // SMTP reply code, 0 if none
	Enhanced  string // enhanced status code "4.7.0", "" if none
	Text      string // reply text or error text, safe to log and store
	Temporary bool   // true: keep the message queued and retry
	Err       error  // underlying error, for errors.Is/As
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("upstream ")
	b.WriteString(e.Op)
	b.WriteString(": ")
	if e.Code != 0 {
		b.WriteString(strconv.Itoa(e.Code))
		b.WriteByte(' ')
	}
	if e.Enhanced != "" {
		b.WriteString(e.Enhanced)
		b.WriteByte(' ')
	}
	b.WriteString(e.Text)
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// reply is one SMTP reply taken apart.
type reply struct {
	code     int
	enhanced string
	text     string
}

// smtpReply extracts the reply from err if the server sent one.
func smtpReply(err error) (reply, bool) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return reply{se.Code, enhancedString(se.EnhancedCode), clean(se.Message)}, true
	}
	// Replies read by our own pre-STARTTLS dialog.
	var te *textproto.Error
	if errors.As(err, &te) {
		return parseReply(te.Code, te.Msg), true
	}
	return reply{}, false
}

// enhancedString formats an enhanced status code. go-smtp uses the zero value
// when a reply had none and NoEnhancedCode {-1,-1,-1} on its server side:
// both mean "none".
func enhancedString(c smtp.EnhancedCode) string {
	if c[0] <= 0 || c[1] < 0 || c[2] < 0 {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", c[0], c[1], c[2])
}

// parseReply splits an RFC 2034 enhanced code off the front of a reply text.
// go-smtp only does that for error replies; we also want it for the 250 to
// DATA, which often carries a tracking ID worth logging.
func parseReply(code int, msg string) reply {
	r := reply{code: code, text: msg}
	first, rest, ok := strings.Cut(msg, " ")
	if ok && isEnhanced(first, code) {
		r.enhanced = first
		// Per RFC 2034 each line of a multi-line reply repeats the code.
		r.text = strings.ReplaceAll(rest, "\n"+first+" ", "\n")
	}
	r.text = clean(r.text)
	return r
}

func isEnhanced(s string, code int) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(s) > 11 {
		return false
	}
	for _, p := range parts {
		if p == "" {
			return false
		}
		if _, err := strconv.Atoi(p); err != nil {
			return false
		}
	}
	// The class must agree with the reply code's.
	return s[0] == byte('0'+code/100)
}

// maxText bounds the text we keep from a reply or error: it is stored with
// the message and shown by mailq.
const maxText = 1000

// clean makes server-supplied text safe to log and store: one line, no
// control characters, valid UTF-8, bounded length.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	space := false
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			r = ' '
		}
		if r == ' ' {
			if space {
				continue
			}
			space = true
		} else {
			space = false
		}
		if b.Len()+utf8.RuneLen(r) > maxText {
			b.WriteString("...")
			break
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

// newError describes err, which happened during op, as an *Error. Unless
// the caller says otherwise it is temporary: see the policy on Error.
func newError(ctx context.Context, op string, err error) *Error {
	e := &Error{Op: op, Temporary: true, Err: err}
	if r, ok := smtpReply(err); ok {
		e.Code, e.Enhanced, e.Text = r.code, r.enhanced, r.text
		return e
	}
	if ctx.Err() != nil {
		// We closed the connection to interrupt the attempt: report why,
		// not the "use of closed network connection" that followed.
		e.Err = errors.Join(context.Cause(ctx), err)
		e.Text = "attempt canceled: " + clean(context.Cause(ctx).Error())
		return e
	}
	e.Text = clean(errText(err))
	return e
}

// errText is the text of a local or network error.
func errText(err error) string {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "timed out: " + err.Error()
	}
	return err.Error()
}

// replyStatus maps a final reply code for a recipient to a Status.
func replyStatus(code int) Status {
	switch code / 100 {
	case 2:
		return Delivered
	case 5:
		return Failed
	}
	return Deferred
}

// wantsSetup reports whether a rejection says that this host must
// authenticate or encrypt first (RFC 4954 530 5.7.0, RFC 3207 530, RFC 5248
// X.7.8 to X.7.11). That is a configuration problem here, so it must not
// bounce the message even though the code is 5xx.
func wantsSetup(r reply) bool {
	if r.code == 530 {
		return true
	}
	switch strings.TrimPrefix(r.enhanced, "5.") {
	case "7.8", "7.9", "7.10", "7.11":
		return true
	}
	return false
}
