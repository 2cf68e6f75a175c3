package sendmail

import (
	"github.com/outboxmta/outbox/internal/address"

	"bytes"
	"strings"
	"testing"

	"github.com/outboxmta/outbox/internal/crlf"
)

// FuzzPrepare checks the invariants the spool relies on for any input:
// the result is canonical CRLF, blind copies are gone with -t, and every
// recipient passes address.Valid.
func FuzzPrepare(f *testing.F) {
	f.Add([]byte("To: a@x\r\nBcc: b@x,\r\n c@x\r\n\r\nbody\r\n"), "root")
	f.Add([]byte("hello\n.\n"), "a@x, b")
	f.Add([]byte("From x Mon Jan  1 00:00:00 2024\nResent-Cc: g: r;\n\n"), "")
	f.Add([]byte("To: (c) \"q\\\"\" <@r:u@[1.2]>\r\n"), "<>")
	f.Fuzz(func(t *testing.T, msg []byte, arg string) {
		for _, extract := range []bool{false, true} {
			pr, err := Prepare(msg, params(func(p *Params) {
				p.ExtractRecipients = extract
				p.ArgRecipients = []string{arg}
			}))
			if err != nil {
				continue
			}
			if !crlf.Canonical(pr.Message) {
				t.Fatalf("not canonical: %q", pr.Message)
			}
			h := parseHeader(pr.Message)
			for _, fl := range h.fields {
				if extract && (strings.EqualFold(fl.name, "bcc") || strings.EqualFold(fl.name, "resent-bcc")) {
					t.Fatalf("Bcc left in %q", pr.Message)
				}
			}
			if len(pr.Recipients) == 0 {
				t.Fatal("no recipients without an error")
			}
			for _, r := range pr.Recipients {
				if err := address.Valid(r); err != nil {
					t.Fatalf("recipient %q: %v", r, err)
				}
			}
		}
	})
}

// FuzzReadMessage checks that output is canonical and that -i reads
// everything.
func FuzzReadMessage(f *testing.F) {
	f.Add([]byte("a\n.\nb"))
	f.Add([]byte("a\r.\r\n\r"))
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, ignoreDots := range []bool{false, true} {
			out, err := ReadMessage(bytes.NewReader(in), ignoreDots, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !crlf.Canonical(out) {
				t.Fatalf("not canonical: %q", out)
			}
			if ignoreDots {
				stripped := bytes.ReplaceAll(bytes.ReplaceAll(out, []byte("\r\n"), nil), []byte("\r"), nil)
				orig := bytes.ReplaceAll(bytes.ReplaceAll(in, []byte("\n"), nil), []byte("\r"), nil)
				if !bytes.Equal(stripped, orig) {
					t.Fatalf("content changed: %q -> %q", in, out)
				}
			}
		}
	})
}
