package listener

import (
	"errors"
	"io"
	"net/netip"

	"github.com/emersion/go-smtp"
)

// Line endings (SMTP smuggling, CVE-2023-51764 class). go-smtp ends DATA
// only on CRLF.CRLF, but passes bare CR, bare LF and NUL in a message on
// to Session.Data unchanged, from DATA and from BDAT chunks alike (both
// reach the same Session.Data reader). What a message may contain depends
// on who sends it:
//
//   - Local clients (unix sockets, and TCP clients in the endpoint's
//     LocalNetworks, by default the loopback) are legacy applications and
//     our own sendmail command: their bare CR and bare LF are converted to
//     CRLF, and NUL passes.
//   - Every other client must send CRLF line endings: a message with a bare
//     CR, a bare LF or a NUL byte is refused with 554 5.6.0 and nothing is
//     spooled. This is Postfix's smtpd_forbid_bare_newline = reject with
//     the loopback as its exclusions, extended to bare CR and NUL.
//
// One smuggling form cannot be seen here: go-smtp drops the dot of a line
// that starts with "." and takes the CR after it as part of the dot line,
// so "\r\n.\r\r\n" reaches the session as "\r\n\r\n". The message does not
// end there, which is what matters.

var (
	errBareNewline = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: "Message contains bare CR or LF; send CRLF line endings"}
	errNUL = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: "Message contains a NUL byte"}
	// errAborted stands for a message the client did not finish: it went
	// away, reset a BDAT transfer, or timed out. Nobody reads this reply,
	// and it is not counted as an error.
	errAborted = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "Message transfer aborted"}
)

// defaultLocalNetworks are the local networks of an endpoint that names none.
var defaultLocalNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// local reports whether the peer may send bare CR and LF, to be converted.
func (p peer) local(networks []netip.Prefix) bool {
	if p.unix {
		return true
	}
	if networks == nil {
		networks = defaultLocalNetworks
	}
	for _, n := range networks {
		if n.Contains(p.ip) {
			return true
		}
	}
	return false
}

// messageReader reads a message from go-smtp. When strict, it fails at
// the first bare CR, bare LF or NUL byte with the 554 reply to give, so
// that the session stops writing to the spool at once; go-smtp still reads
// the rest of a DATA message before it sends the reply. Errors of the
// connection below become a clientError.
type messageReader struct {
	r      io.Reader
	strict bool
	cr     bool  // the last byte read was a CR
	err    error // sticky
}

func (m *messageReader) Read(p []byte) (int, error) {
	if m.err != nil {
		return 0, m.err
	}
	n, err := m.r.Read(p)
	if m.strict {
		for i, b := range p[:n] {
			var bad error
			switch {
			case m.cr && b != '\n', !m.cr && b == '\n':
				bad = errBareNewline
			case b == 0:
				bad = errNUL
			}
			if bad != nil {
				m.err = bad
				return i, bad
			}
			m.cr = b == '\r'
		}
		if err == io.EOF && m.cr {
			err = errBareNewline // the message ends in a bare CR
		}
	}
	switch {
	case err == nil || err == io.EOF:
	case errors.As(err, new(*smtp.SMTPError)):
		// go-smtp's own reply, such as 552 for a message too large.
	default:
		err = clientError{err}
	}
	if err != nil && err != io.EOF {
		m.err = err
	}
	return n, err
}

// clientError is a failure to read the message: the client went away,
// timed out, or reset a BDAT transfer.
type clientError struct{ err error }

func (e clientError) Error() string { return "reading the message: " + e.err.Error() }
func (e clientError) Unwrap() error { return e.err }

// messageRefused returns the reply for a message that could not be read
// to its end: the reader's own (too large, bad line endings), errAborted
// when the client gave up, or nil for a failure of the spool.
func messageRefused(err error) *smtp.SMTPError {
	var ce clientError
	if errors.As(err, &ce) {
		return errAborted
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se
	}
	return nil
}
