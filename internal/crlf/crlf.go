// Package crlf canonicalizes line endings so that every line of a message
// ends in CRLF. Outbox stores and relays messages only in this form: a bare
// CR or bare LF that reached an upstream could let one message smuggle
// another past a receiver that reads line endings differently
// (CVE-2023-51764 class).
package crlf

import "io"

// Writer converts bare LF and bare CR in what is written to it into CRLF and
// passes everything else through. Close (or Flush) must be called at the end
// so that a trailing bare CR is written out.
type Writer struct {
	w      io.Writer
	buf    []byte
	sawCR  bool // the last byte written was a CR whose LF may follow
	lastNL bool // the output so far ends with CRLF (or is empty)
	n      int64
}

// NewWriter returns a Writer that writes canonical text to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w, lastNL: true} }

// Write implements io.Writer.
func (c *Writer) Write(p []byte) (int, error) {
	c.buf = c.buf[:0]
	for _, b := range p {
		switch {
		case c.sawCR && b == '\n':
			c.buf = append(c.buf, '\n')
			c.sawCR = false
			continue
		case c.sawCR:
			c.buf = append(c.buf, '\n') // bare CR becomes CRLF
			c.sawCR = false
		}
		switch b {
		case '\r':
			c.buf = append(c.buf, '\r')
			c.sawCR = true
		case '\n':
			c.buf = append(c.buf, '\r', '\n')
		default:
			c.buf = append(c.buf, b)
		}
	}
	if len(c.buf) > 0 {
		// Every LF in the output is the end of a CRLF.
		c.lastNL = !c.sawCR && c.buf[len(c.buf)-1] == '\n'
	}
	n, err := c.w.Write(c.buf)
	c.n += int64(n)
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes out a pending bare CR as CRLF.
func (c *Writer) Flush() error {
	if !c.sawCR {
		return nil
	}
	c.sawCR = false
	c.lastNL = true
	n, err := c.w.Write([]byte{'\n'})
	c.n += int64(n)
	return err
}

// Close flushes and, if the text does not end with a line break, adds a
// final CRLF, since SMTP cannot carry a last line without one. It does not
// close the underlying writer.
func (c *Writer) Close() error {
	if err := c.Flush(); err != nil {
		return err
	}
	if c.lastNL {
		return nil
	}
	c.lastNL = true
	n, err := c.w.Write([]byte{'\r', '\n'})
	c.n += int64(n)
	return err
}

// Written is the number of bytes written to the underlying writer.
func (c *Writer) Written() int64 { return c.n }

// Canonical reports whether p already has only CRLF line endings.
func Canonical(p []byte) bool {
	for i, b := range p {
		switch b {
		case '\r':
			if i+1 >= len(p) || p[i+1] != '\n' {
				return false
			}
		case '\n':
			if i == 0 || p[i-1] != '\r' {
				return false
			}
		}
	}
	return true
}
