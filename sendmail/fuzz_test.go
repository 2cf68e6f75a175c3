package sendmail

import (
	"github.com/outboxmta/outbox/internal/address"

	"bytes"
	"errors"
	"reflect"
	"slices"
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

// FuzzParseArgs feeds command lines (arguments separated by NUL bytes) to
// ParseArgs. A refusal is an *ExitError with a usage status and no partial
// result; an accepted command line is valid, its values are in their
// documented ranges, and writing the options back out as a command line
// parses to the same options.
func FuzzParseArgs(f *testing.F) {
	for _, argv := range [][]string{
		{"-t", "-i"},
		{"-oi", "-f", "<app@example.com>", "-F", "App", "--", "a@x, b@y"},
		{"-fsender", "-Btrue", "x"},
		{"-bp"}, {"-bs"}, {"-q30m"}, {"-bi"}, {"--version"},
		{"-N", "success,delay", "-R", "hdrs", "-V", "env-1", "a@x"},
		{"-C", "/etc/x.toml", "-ti", "-X", "log", "-"},
		{"root", "-t"}, {"-f"}, {"-bd"}, {"-O", "IgnoreDots=true", "g: a@x, b@y;"},
	} {
		f.Add(strings.Join(argv, "\x00"))
	}
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Split(line, "\x00")
		opts, warnings, err := ParseArgs(args)
		if err != nil {
			var ee *ExitError
			if !errors.As(err, &ee) || ee.Code != ExUsage {
				t.Fatalf("%q: error %v (%T) is not a usage error", args, err, err)
			}
			if opts != nil || warnings != nil {
				t.Fatalf("%q: refused with a partial result %+v %q", args, opts, warnings)
			}
			return
		}
		if err := opts.Validate(); err != nil {
			t.Fatalf("%q: accepted but %v", args, err)
		}
		checkRange(t, "-B", opts.BodyType, "", "7BIT", "8BITMIME")
		checkRange(t, "-R", opts.DSNReturn, "", "FULL", "HDRS")
		if n := len(opts.EnvID); n > 100 {
			t.Fatalf("-V of %d bytes", n)
		}
		for _, r := range opts.Recipients {
			if r == "" || r != strings.TrimSpace(r) {
				t.Fatalf("%q: recipient %q empty or untrimmed", args, r)
			}
		}
		again, _, err := ParseArgs(formatArgs(opts))
		if err != nil {
			t.Fatalf("%q: options %+v written as %q: %v", args, opts, formatArgs(opts), err)
		}
		if !reflect.DeepEqual(opts, again) {
			t.Fatalf("%q: parsed %+v, written as %q parsed %+v", args, opts, formatArgs(opts), again)
		}
	})
}

func checkRange(t *testing.T, option, v string, allowed ...string) {
	t.Helper()
	if !slices.Contains(allowed, v) {
		t.Fatalf("%s value %q not one of %q", option, v, allowed)
	}
}

// formatArgs writes o as a command line that means the same.
func formatArgs(o *Options) []string {
	var a []string
	switch o.Mode {
	case ModeFlush:
		a = append(a, "-q"+o.QueueArg)
	case ModeVersion:
		a = append(a, "--version")
	default:
		a = append(a, o.Mode.String())
	}
	for _, opt := range []struct {
		set  bool
		flag string
	}{{o.ExtractRecipients, "-t"}, {o.IgnoreDots, "-i"}, {o.Verbose, "-v"}} {
		if opt.set {
			a = append(a, opt.flag)
		}
	}
	if o.SenderSet {
		a = append(a, "-f", "<"+o.Sender+">")
	}
	for _, opt := range []struct{ flag, v string }{
		{"-F", o.FullName}, {"-C", o.ConfigFile}, {"-B", o.BodyType},
		{"-N", o.DSNNotify}, {"-R", o.DSNReturn}, {"-V", o.EnvID},
	} {
		if opt.v != "" {
			a = append(a, opt.flag, opt.v)
		}
	}
	if len(o.Recipients) > 0 {
		a = append(a, "--")
		a = append(a, o.Recipients...)
	}
	return a
}

// FuzzParseHeader checks that parseHeader describes the header block
// exactly: fields follow each other from the first byte without gaps,
// each starts with its name and holds its colon, and the block ends where
// the empty line (if any) begins.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte("Subject: a\r\n b\r\nTo: x\r\n\r\nbody\r\n"))
	f.Add([]byte("Name : v\r\n\tmore\r\nnot a header\r\n"))
	f.Add([]byte(" leading continuation\r\n"))
	f.Add([]byte("X:\r\nY:y"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		msg = canonical(msg)
		h := parseHeader(msg)
		if h.end < 0 || h.end > len(msg) {
			t.Fatalf("end %d outside %d bytes", h.end, len(msg))
		}
		pos := 0
		for _, fl := range h.fields {
			if fl.start != pos || fl.end <= fl.start || fl.colon < fl.start || fl.colon >= fl.end {
				t.Fatalf("field %+v after offset %d in %q", fl, pos, msg)
			}
			if !bytes.HasPrefix(msg[fl.start:], []byte(fl.name)) || msg[fl.colon] != ':' {
				t.Fatalf("field %+v does not start with its name and colon in %q", fl, msg)
			}
			// Only the last line of a field may lack its CRLF (end of input).
			if body := msg[fl.start:fl.end]; bytes.Contains(bytes.TrimSuffix(body, []byte("\r\n")), []byte("\r\n")) {
				for line := range bytes.SplitSeq(bytes.TrimSuffix(body, []byte("\r\n")), []byte("\r\n")) {
					if line[0] != ' ' && line[0] != '\t' && !bytes.HasPrefix(line, []byte(fl.name)) {
						t.Fatalf("field %+v swallowed line %q", fl, line)
					}
				}
			}
			pos = fl.end
		}
		if pos != h.end {
			t.Fatalf("fields end at %d, header at %d, in %q", pos, h.end, msg)
		}
		if h.blank != bytes.HasPrefix(msg[h.end:], []byte("\r\n")) {
			t.Fatalf("blank=%v but %q follows the header", h.blank, msg[h.end:])
		}
	})
}

// unqualified is v without domains and white space.
func unqualified(v, domain string) string {
	v = strings.ReplaceAll(v, "@"+domain, "")
	return strings.Join(strings.Fields(v), "")
}

// FuzzAddressList checks the address-list helpers on any header value:
// the tokens concatenate back to the input, qualifying is idempotent and
// only ever adds "@domain" (and
// drops white space around an address in angle brackets), and splitting yields trimmed, non-empty parts.
func FuzzAddressList(f *testing.F) {
	for _, v := range []string{
		"root", `"John Doe" <john>, (c) x@y`, "g: a, b@c;, d", "<@r:u@h>",
		`"un terminated`, "a (b (c)) <d@e>", "[1.2.3.4]", "x@y, ,,",
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if toks, err := tokenize(v); err == nil {
			var b strings.Builder
			for _, tk := range toks {
				b.WriteString(tk.text)
			}
			if b.String() != v {
				t.Fatalf("tokens of %q join to %q", v, b.String())
			}
		}
		const domain = "example.org"
		q := qualifyList(v, domain)
		if qq := qualifyList(q, domain); qq != q {
			t.Fatalf("qualifying %q twice: %q then %q", v, q, qq)
		}
		// White space inside angle brackets may go: "<root >" becomes
		// "<root@example.org>".
		if unqualified(q, domain) != unqualified(v, domain) {
			t.Fatalf("qualifying %q changed more than domains: %q", v, q)
		}
		if qualifyList(v, "") != v {
			t.Fatalf("qualifying %q without a domain changed it", v)
		}
		for _, p := range splitList(v) {
			if p == "" || p != strings.TrimSpace(p) {
				t.Fatalf("splitList(%q) gave %q", v, p)
			}
		}
		if addrs, err := parseAddressList(v); err != nil && addrs != nil {
			t.Fatalf("parseAddressList(%q) gave %q and %v", v, addrs, err)
		}
	})
}
