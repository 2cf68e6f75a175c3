package upstream

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
)

// maxTapLine bounds what a tap keeps of one line; the rest is counted, not
// stored, so a long body line cannot make it grow without limit.
const maxTapLine = 4096

// tapConn hands every complete line read from or written to the connection
// to fn, after the fact. It sits above TLS so it sees the cleartext.
type tapConn struct {
	net.Conn
	fn         func(fromServer bool, line []byte, n int)
	rbuf, wbuf tapBuf
}

func (t *tapConn) Read(p []byte) (int, error) {
	n, err := t.Conn.Read(p)
	t.rbuf.feed(p[:n], func(l []byte, size int) { t.fn(true, l, size) })
	return n, err
}

func (t *tapConn) Write(p []byte) (int, error) {
	n, err := t.Conn.Write(p)
	t.wbuf.feed(p[:n], func(l []byte, size int) { t.fn(false, l, size) })
	return n, err
}

type tapBuf struct {
	line []byte
	n    int // full length of the current line, including what was dropped
}

func (b *tapBuf) feed(p []byte, emit func(line []byte, n int)) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i+1]
		}
		p = p[len(chunk):]
		b.n += len(chunk)
		if room := maxTapLine - len(b.line); room > 0 {
			b.line = append(b.line, chunk[:min(room, len(chunk))]...)
		}
		if i >= 0 {
			emit(bytes.TrimRight(b.line, "\r\n"), b.n)
			b.line, b.n = b.line[:0], 0
		}
	}
}

// tracer writes a protocol trace ("C: " client, "S: " server lines) with
// secrets removed: the argument of AUTH and every line the client sends in
// answer to a 334 challenge become "<redacted>". The message itself is not
// traced, only its size: it is not ours to copy into a terminal or a log.
type tracer struct {
	emit   func(line string) // one line, without newline
	secret bool              // the next client line answers a 334
	data   bool              // between 354 and the final dot
	size   int               // bytes of message data so far
}

func (t *tracer) line(fromServer bool, l []byte, n int) {
	switch {
	case fromServer:
		code := string(l[:min(3, len(l))])
		cont := len(l) > 3 && l[3] == '-'
		if !cont {
			t.secret = code == "334"
			// Data mode ends only with our final dot: a server that
			// complains mid-message must not make the body show up.
			if code == "354" {
				t.data, t.size = true, 0
			}
		}
		t.emit("S: " + string(l))
	case t.data:
		if string(l) == "." {
			t.data = false
			t.emit(fmt.Sprintf("C: <message data, %d bytes>", t.size))
			t.emit("C: .")
			return
		}
		t.size += n
	case t.secret:
		t.secret = false
		t.emit("C: <redacted>")
	default:
		t.emit("C: " + string(redactAuth(l)))
	}
}

// note adds a line that is not part of the dialog, such as TLS details.
func (t *tracer) note(format string, args ...any) {
	t.emit("* " + fmt.Sprintf(format, args...))
}

// tracer returns the trace for session s: to the Client's Trace writer if
// set, else to the log when the upstream has trace = true, else none. In
// the log each line is one record at info level, carrying the upstream,
// the connection's number and the queue ID of the message being sent.
func (c *Client) tracer(s *session) *tracer {
	switch {
	case c.Trace != nil:
		return &tracer{emit: func(l string) {
			c.traceMu.Lock()
			defer c.traceMu.Unlock()
			io.WriteString(c.Trace, l+"\n")
		}}
	case c.cfg.Trace:
		return &tracer{emit: func(l string) { s.log.Info("smtp", "line", l) }}
	}
	return nil
}

// redactAuth hides the initial response of "AUTH <mech> <initial-response>".
func redactAuth(l []byte) []byte {
	f := strings.Fields(string(l))
	if len(f) > 2 && strings.EqualFold(f[0], "AUTH") {
		return []byte(f[0] + " " + f[1] + " <redacted>")
	}
	return l
}

// ehloCapture collects the extensions of the last EHLO reply. go-smtp's
// Client only answers questions about named extensions; `outbox check`
// wants the whole list.
type ehloCapture struct {
	inEHLO bool
	first  bool
	ext    map[string]string
}

func (e *ehloCapture) line(fromServer bool, l []byte, _ int) {
	if !fromServer {
		f := strings.Fields(string(l))
		e.inEHLO = len(f) > 0 && strings.EqualFold(f[0], "EHLO")
		if e.inEHLO {
			e.first, e.ext = true, map[string]string{}
		}
		return
	}
	if !e.inEHLO || len(l) < 4 || string(l[:3]) != "250" {
		e.inEHLO = false
		return
	}
	if e.first {
		e.first = false // the server's name and greeting
	} else {
		kw, param, _ := strings.Cut(string(l[4:]), " ")
		e.ext[strings.ToUpper(kw)] = clean(param)
	}
	if l[3] == ' ' {
		e.inEHLO = false
	}
}
