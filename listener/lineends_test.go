package listener

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/outboxmta/outbox/internal/crlf"
)

// strictEndpoint trusts 127.0.0.1 only as local, so that a test client
// bound to 127.0.0.2 is a non-local client (and may still relay).
var strictEndpoint = Endpoint{Networks: loopback, LocalNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}

var nonLocal = &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}

const envelope = "EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n"

// bdat sends chunks with BDAT, the last one with LAST.
func bdat(chunks ...string) string {
	var b strings.Builder
	for i, c := range chunks {
		last := ""
		if i == len(chunks)-1 {
			last = " LAST"
		}
		fmt.Fprintf(&b, "BDAT %d%s\r\n%s", len(c), last, c)
	}
	return b.String()
}

func TestLineEndings(t *testing.T) {
	const refusedCRLF = "554 5.6.0 Message contains bare CR or LF; send CRLF line endings"
	const refusedNUL = "554 5.6.0 Message contains a NUL byte"
	tests := []struct {
		name string
		// The message after DATA, ending in CRLF (".\r\n" is added), or
		// the BDAT chunks.
		data   string
		chunks []string
		refuse string // the reply to a non-local client; "" if accepted
		stored string // how the message ends in the spool when accepted
	}{
		{name: "CRLF", data: "Subject: s\r\n\r\nok\r\n", stored: "\r\n\r\nok\r\n"},
		{name: "bare LF", data: "Subject: s\r\n\r\nbare\nLF\r\n", refuse: refusedCRLF, stored: "\r\n\r\nbare\r\nLF\r\n"},
		{name: "bare CR", data: "Subject: s\r\n\r\nbare\rCR\r\n", refuse: refusedCRLF, stored: "\r\n\r\nbare\r\nCR\r\n"},
		{name: "LF only", data: "Subject: s\n\nunix\nend\r\n", refuse: refusedCRLF, stored: "Subject: s\r\n\r\nunix\r\nend\r\n"},
		{name: "CR LF LF", data: "Subject: s\r\n\r\nx\r\n\n\r\n", refuse: refusedCRLF, stored: "\r\n\r\nx\r\n\r\n\r\n"},
		{name: "NUL", data: "Subject: s\r\n\r\nnul\x00byte\r\n", refuse: refusedNUL, stored: "\r\n\r\nnul\x00byte\r\n"},

		{name: "BDAT CRLF", chunks: []string{"Subject: s\r\n\r\nok\r\n"}, stored: "\r\n\r\nok\r\n"},
		{name: "BDAT CRLF split between chunks", chunks: []string{"Subject: s\r", "\n\r\nok\r", "\n"}, stored: "\r\n\r\nok\r\n"},
		{name: "BDAT bare LF", chunks: []string{"Subject: s\r\n\r\nbare\nLF\r\n"}, refuse: refusedCRLF, stored: "\r\n\r\nbare\r\nLF\r\n"},
		{name: "BDAT bare LF in an early chunk", chunks: []string{"Subject: s\n", "\r\nok\r\n"}, refuse: refusedCRLF, stored: "Subject: s\r\n\r\nok\r\n"},
		{name: "BDAT bare CR at a chunk's end", chunks: []string{"Subject: s\r\n\r\nx\r", "y\r\n"}, refuse: refusedCRLF, stored: "\r\n\r\nx\r\ny\r\n"},
		{name: "BDAT bare CR at the message's end", chunks: []string{"Subject: s\r\n\r\nx\r"}, refuse: refusedCRLF, stored: "\r\n\r\nx\r\n"},
		{name: "BDAT NUL", chunks: []string{"Subject: s\r\n\r\n\x00\r\n"}, refuse: refusedNUL, stored: "\r\n\r\n\x00\r\n"},
		// What DATA would take as the end of the message is just data in a chunk.
		{name: "BDAT dot line", chunks: []string{"Subject: s\r\n\r\n.\r\nstill\r\n"}, stored: "\r\n\r\n.\r\nstill\r\n"},
	}
	for _, tt := range tests {
		send := envelope
		if tt.chunks != nil {
			send += bdat(tt.chunks...) + "QUIT\r\n"
		} else {
			send += "DATA\r\n" + tt.data + ".\r\nQUIT\r\n"
		}
		t.Run(tt.name+"/non-local", func(t *testing.T) {
			f := serve(t, strictEndpoint)
			out := dialog(t, "tcp", f.addr, nonLocal, send)
			recs := f.records(t)
			if tt.refuse == "" {
				if len(recs) != 1 || !strings.Contains(out, "queued as") {
					t.Fatalf("%d messages spooled, want 1:\n%s", len(recs), out)
				}
				for _, body := range recs {
					if !strings.HasSuffix(body, tt.stored) {
						t.Errorf("stored %q, want it to end %q", body, tt.stored)
					}
				}
				return
			}
			if !strings.Contains(out, tt.refuse+"\r\n") || strings.Contains(out, "queued as") || !strings.HasSuffix(out, "221 2.0.0 Bye\r\n") {
				t.Errorf("want %q and the session going on:\n%s", tt.refuse, out)
			}
			if len(recs) != 0 || len(f.queued) != 0 {
				t.Errorf("%d messages spooled, want none", len(recs))
			}
		})
		t.Run(tt.name+"/local", func(t *testing.T) {
			f := serve(t, strictEndpoint)
			out := dialog(t, "tcp", f.addr, nil, send)
			recs := f.records(t)
			if len(recs) != 1 || !strings.Contains(out, "queued as") {
				t.Fatalf("%d messages spooled, want 1:\n%s", len(recs), out)
			}
			for _, body := range recs {
				if !strings.HasSuffix(body, tt.stored) || !crlf.Canonical([]byte(body)) {
					t.Errorf("stored %q, want it canonical, ending %q", body, tt.stored)
				}
			}
		})
	}
}

// Unix socket clients are local whatever LocalNetworks says.
func TestLineEndingsUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "smtp.sock")
	f := serve(t, Endpoint{Address: sock, LocalNetworks: []netip.Prefix{}})
	out := dialog(t, "unix", sock, nil, envelope+"DATA\r\nSubject: s\n\nunix\nend\r\n.\r\nQUIT\r\n")
	if !strings.Contains(out, "queued as") {
		t.Fatalf("reply:\n%s", out)
	}
	for _, body := range f.records(t) {
		if !strings.HasSuffix(body, "Subject: s\r\n\r\nunix\r\nend\r\n") {
			t.Errorf("stored %q", body)
		}
	}
}

// The smuggling payloads of TestSmuggling from a non-local client: the
// message is refused whole, and the would-be second message with it.
func TestSmugglingNonLocal(t *testing.T) {
	for _, eod := range []string{"\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\n", "\r.\n", "\n.\r", "\r\n\x00.\r\n", "\r\n.\r\r\n"} {
		t.Run(fmt.Sprintf("%q", eod), func(t *testing.T) {
			f := serve(t, strictEndpoint)
			send := envelope + "DATA\r\n" + "Subject: s\r\n\r\nbefore" + eod +
				"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nsmuggled\r\n.\r\nQUIT\r\n"
			out := dialog(t, "tcp", f.addr, nonLocal, send)
			recs := f.records(t)
			if eod == "\r\n.\r\r\n" {
				// go-smtp drops the dot and the CR after it, so the session
				// sees "\r\n\r\n": nothing to refuse, and still one message.
				if len(recs) != 1 || strings.Count(out, "queued as") != 1 {
					t.Fatalf("%d messages spooled, want 1:\n%s", len(recs), out)
				}
				for _, body := range recs {
					if !crlf.Canonical([]byte(body)) || !strings.Contains(body, "before\r\n\r\nMAIL FROM:<evil@example.com>") || !strings.Contains(body, "smuggled") {
						t.Errorf("stored %q", body)
					}
				}
				return
			}
			if strings.Count(out, "554 5.6.0 ") != 1 || strings.Contains(out, "queued as") || strings.Count(out, "Roger") != 1 {
				t.Errorf("want one 554 5.6.0 and nothing accepted:\n%s", out)
			}
			if len(recs) != 0 {
				t.Errorf("%d messages spooled, want none", len(recs))
			}
		})
	}
}

// The checker itself, over reads of every size, so that a CR and its LF
// in different reads are seen as the pair they are.
func TestMessageReader(t *testing.T) {
	tests := []struct {
		in   string
		want error
	}{
		{"", nil},
		{"a\r\nb\r\n", nil},
		{"a\r\n\r\n", nil},
		{"no line end", nil},
		{"\n", errBareNewline},
		{"\r", errBareNewline},
		{"a\r\r\n", errBareNewline},
		{"a\n\r", errBareNewline},
		{"a\r\nb\n", errBareNewline},
		{"a\r\nb\r", errBareNewline},
		{"\x00", errNUL},
		{"a\r\n\x00\r\n", errNUL},
	}
	for _, tt := range tests {
		for _, strict := range []bool{true, false} {
			for _, wrap := range []func(io.Reader) io.Reader{func(r io.Reader) io.Reader { return r }, iotest.OneByteReader, iotest.HalfReader} {
				m := &messageReader{r: wrap(strings.NewReader(tt.in)), strict: strict}
				got, err := io.ReadAll(m)
				want := tt.want
				if !strict {
					want = nil
				}
				if err != want {
					t.Errorf("%q strict=%v: err = %v, want %v", tt.in, strict, err, want)
				}
				if err == nil && string(got) != tt.in {
					t.Errorf("%q strict=%v: read %q", tt.in, strict, got)
				}
				if err != nil {
					if _, again := m.Read(make([]byte, 10)); again != err {
						t.Errorf("%q: error not sticky: %v", tt.in, again)
					}
				}
			}
		}
	}
}

// Errors of the connection are the client's, not the spool's.
func TestMessageReaderClientErrors(t *testing.T) {
	m := &messageReader{r: iotest.ErrReader(io.ErrUnexpectedEOF)}
	_, err := io.ReadAll(m)
	if messageRefused(err) != errAborted {
		t.Errorf("read error %v: reply %v, want errAborted", err, messageRefused(err))
	}
	if messageRefused(io.ErrShortWrite) != nil {
		t.Error("a write error is taken for the client's")
	}
}
