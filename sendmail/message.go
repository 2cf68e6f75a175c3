package sendmail

import (
	"bufio"
	"errors"
	"io"

	"github.com/outboxmta/outbox/internal/crlf"
)

// ReadMessage reads the message from r (standard input) and returns it with
// canonical CRLF line endings and a final CRLF.
//
// Unless ignoreDots is set (-i, -oi), a line consisting of a single "."
// ends the message and nothing after it is read, as with Sendmail and
// Postfix. Lines starting with "." are otherwise kept as they are: standard
// input is not SMTP, so there is no dot-stuffing to undo.
//
// If the canonical message would exceed maxSize bytes, reading stops and an
// ExDataErr *ExitError is returned; maxSize <= 0 means no limit. Memory use
// stays within maxSize plus the read buffer.
func ReadMessage(r io.Reader, ignoreDots bool, maxSize int64) ([]byte, error) {
	buf := &cappedBuffer{max: maxSize}
	w := crlf.NewWriter(buf)
	br := bufio.NewReader(r)
	atLineStart := true
	for {
		// ReadSlice rather than ReadBytes: a line longer than the buffer
		// arrives in pieces instead of being accumulated, so a huge line
		// cannot use more memory than the limit allows.
		chunk, err := br.ReadSlice('\n')
		if !ignoreDots && atLineStart && isDotLine(chunk, err == io.EOF) {
			break
		}
		if len(chunk) > 0 {
			if _, werr := w.Write(chunk); werr != nil {
				return nil, writeError(werr, maxSize)
			}
			atLineStart = chunk[len(chunk)-1] == '\n'
		}
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return nil, exitf(ExIOErr, "error reading message: %v", err)
		}
	}
	if err := w.Close(); err != nil {
		return nil, writeError(err, maxSize)
	}
	return buf.b, nil
}

// isDotLine reports whether line, as returned by ReadSlice, is the
// end-of-input marker: "." followed by LF, CRLF, or the end of input.
func isDotLine(line []byte, atEOF bool) bool {
	switch string(line) {
	case ".\n", ".\r\n":
		return true
	case ".", ".\r":
		return atEOF
	}
	return false
}

func writeError(err error, maxSize int64) error {
	if errors.Is(err, errTooLarge) {
		return exitf(ExDataErr, "message too large (limit %d bytes)", maxSize)
	}
	return exitf(ExSoftware, "buffering message: %v", err)
}

var errTooLarge = errors.New("message too large")

// cappedBuffer collects bytes up to max (if max > 0). Unlike bytes.Buffer
// it never grows its capacity beyond max, so a message just under the limit
// does not cost twice the limit in memory.
type cappedBuffer struct {
	b   []byte
	max int64
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	need := len(c.b) + len(p)
	if c.max > 0 && int64(need) > c.max {
		return 0, errTooLarge
	}
	if need > cap(c.b) {
		n := max(2*cap(c.b), need, 4096)
		if c.max > 0 {
			n = int(min(int64(n), c.max))
		}
		nb := make([]byte, len(c.b), n)
		copy(nb, c.b)
		c.b = nb
	}
	c.b = append(c.b, p...)
	return len(p), nil
}
