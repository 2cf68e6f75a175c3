package sendmail

import (
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2024, 3, 5, 14, 7, 9, 0, time.FixedZone("", -5*3600))

const testDate = "Date: Tue, 05 Mar 2024 14:07:09 -0500\n"

// msgIDRe matches an added Message-ID and captures nothing: the random
// part differs between runs.
var msgIDRe = regexp.MustCompile(`Message-ID: <\d{14}\.[A-Z2-7]{26}@mail\.example\.org>\r\n`)

func params(mod func(*Params)) Params {
	p := Params{
		LoginName: "alice",
		Domain:    "example.org",
		Hostname:  "mail.example.org",
		Now:       testNow,
	}
	if mod != nil {
		mod(&p)
	}
	return p
}

// crlfs writes a message readably: "\n" in s becomes CRLF.
func crlfs(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// redactID replaces an added Message-ID so messages can be compared.
func redactID(s string) string {
	return msgIDRe.ReplaceAllString(s, "Message-ID: <ID>\r\n")
}

func TestPrepare(t *testing.T) {
	const complete = "From: Bob <bob@example.com>\nTo: carol@example.com\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <x@y>\nSubject: hi\n\nbody\n"
	tests := []struct {
		name  string
		msg   string
		p     Params
		want  string // message with "\n" for CRLF and <ID> for an added Message-ID
		from  string
		rcpts []string
	}{
		{
			name:  "adds missing headers at the end of the header",
			msg:   "Subject: hello\n\nbody\n",
			p:     params(func(p *Params) { p.ArgRecipients = []string{"bob@example.com"} }),
			want:  "Subject: hello\nFrom: alice@example.org\n" + testDate + "Message-ID: <ID>\nTo: undisclosed-recipients:;\n\nbody\n",
			from:  "alice@example.org",
			rcpts: []string{"bob@example.com"},
		},
		{
			name:  "keeps existing headers untouched",
			msg:   complete,
			p:     params(func(p *Params) { p.ArgRecipients = []string{"carol@example.com"} }),
			want:  complete,
			from:  "alice@example.org",
			rcpts: []string{"carol@example.com"},
		},
		{
			name:  "header names are case-insensitive",
			msg:   "FROM: x@y\ndate: Mon, 1 Jan 2024 00:00:00 +0000\nmessage-id: <a@b>\ncc: z@y\n\n",
			p:     params(func(p *Params) { p.ArgRecipients = []string{"z@y"} }),
			want:  "FROM: x@y\ndate: Mon, 1 Jan 2024 00:00:00 +0000\nmessage-id: <a@b>\ncc: z@y\n\n",
			from:  "alice@example.org",
			rcpts: []string{"z@y"},
		},
		{
			name:  "full name",
			msg:   "To: b@x\n\nhi\n",
			p:     params(func(p *Params) { p.FullName = "Alice Liddell"; p.ArgRecipients = []string{"b@x"} }),
			want:  "To: b@x\nFrom: Alice Liddell <alice@example.org>\n" + testDate + "Message-ID: <ID>\n\nhi\n",
			from:  "alice@example.org",
			rcpts: []string{"b@x"},
		},
		{
			name:  "full name needing quotes",
			msg:   "To: b@x\n\nhi\n",
			p:     params(func(p *Params) { p.FullName = "Liddell, Alice"; p.ArgRecipients = []string{"b@x"} }),
			want:  "To: b@x\nFrom: \"Liddell, Alice\" <alice@example.org>\n" + testDate + "Message-ID: <ID>\n\nhi\n",
			from:  "alice@example.org",
			rcpts: []string{"b@x"},
		},
		{
			name: "-f sender is used for From",
			msg:  "To: b@x\n\nhi\n",
			p: params(func(p *Params) {
				p.Sender, p.SenderSet, p.ArgRecipients = "noreply", true, []string{"b@x"}
			}),
			want:  "To: b@x\nFrom: noreply@example.org\n" + testDate + "Message-ID: <ID>\n\nhi\n",
			from:  "noreply@example.org",
			rcpts: []string{"b@x"},
		},
		{
			name:  "null sender",
			msg:   "To: b@x\n\nhi\n",
			p:     params(func(p *Params) { p.SenderSet, p.ArgRecipients = true, []string{"b@x"} }),
			want:  "To: b@x\nFrom: MAILER-DAEMON@example.org\n" + testDate + "Message-ID: <ID>\n\nhi\n",
			from:  "",
			rcpts: []string{"b@x"},
		},
		{
			name:  "headerless message",
			msg:   "hello\nworld\n",
			p:     params(func(p *Params) { p.ArgRecipients = []string{"root"} }),
			want:  "From: alice@example.org\n" + testDate + "Message-ID: <ID>\nTo: undisclosed-recipients:;\n\nhello\nworld\n",
			from:  "alice@example.org",
			rcpts: []string{"root@example.org"},
		},
		{
			name:  "body starting with white space is headerless",
			msg:   " indented\n",
			p:     params(func(p *Params) { p.ArgRecipients = []string{"b@x"} }),
			want:  "From: alice@example.org\n" + testDate + "Message-ID: <ID>\nTo: undisclosed-recipients:;\n\n indented\n",
			from:  "alice@example.org",
			rcpts: []string{"b@x"},
		},
		{
			name:  "empty message",
			msg:   "",
			p:     params(func(p *Params) { p.ArgRecipients = []string{"b@x"} }),
			want:  "From: alice@example.org\n" + testDate + "Message-ID: <ID>\nTo: undisclosed-recipients:;\n",
			from:  "alice@example.org",
			rcpts: []string{"b@x"},
		},
		{
			name:  "header only, no body",
			msg:   "Subject: s\n",
			p:     params(func(p *Params) { p.ArgRecipients = []string{"b@x"} }),
			want:  "Subject: s\nFrom: alice@example.org\n" + testDate + "Message-ID: <ID>\nTo: undisclosed-recipients:;\n",
			from:  "alice@example.org",
			rcpts: []string{"b@x"},
		},
		{
			name:  "header ended by a non-header line gets a separator",
			msg:   "Subject: s\nthis is body\n",
			p:     params(func(p *Params) { p.ArgRecipients = []string{"b@x"} }),
			want:  "Subject: s\nFrom: alice@example.org\n" + testDate + "Message-ID: <ID>\nTo: undisclosed-recipients:;\n\nthis is body\n",
			from:  "alice@example.org",
			rcpts: []string{"b@x"},
		},
		{
			name:  "mbox From_ line dropped",
			msg:   "From alice Tue Mar  5 14:07:09 2024\nTo: b@x\n\nhi\n",
			p:     params(func(p *Params) { p.ArgRecipients = []string{"b@x"} }),
			want:  "To: b@x\nFrom: alice@example.org\n" + testDate + "Message-ID: <ID>\n\nhi\n",
			from:  "alice@example.org",
			rcpts: []string{"b@x"},
		},
		{
			name:  "text starting with From is kept",
			msg:   "From the server: disk full\n",
			p:     params(func(p *Params) { p.ArgRecipients = []string{"b@x"} }),
			want:  "From: alice@example.org\n" + testDate + "Message-ID: <ID>\nTo: undisclosed-recipients:;\n\nFrom the server: disk full\n",
			from:  "alice@example.org",
			rcpts: []string{"b@x"},
		},
		{
			name: "-t with To, Cc and Bcc; Bcc removed with its continuation lines",
			msg: "From: a@x\nTo: Bob <bob@x>,\n  carol@x\nBcc: dave@x,\n\teve@x,\n  frank@x\nCc: gina@x\nSubject: s\n\n" +
				"Bcc: body@x\nTo: alsobody@x\n",
			p:     params(func(p *Params) { p.ExtractRecipients = true }),
			want:  "From: a@x\nTo: Bob <bob@x>,\n  carol@x\nCc: gina@x\nSubject: s\n" + testDate + "Message-ID: <ID>\n\nBcc: body@x\nTo: alsobody@x\n",
			from:  "alice@example.org",
			rcpts: []string{"bob@x", "carol@x", "dave@x", "eve@x", "frank@x", "gina@x"},
		},
		{
			name:  "-t with only Bcc gets undisclosed-recipients",
			msg:   "bcc: secret@x\n\nhi\n",
			p:     params(func(p *Params) { p.ExtractRecipients = true }),
			want:  "From: alice@example.org\n" + testDate + "Message-ID: <ID>\nTo: undisclosed-recipients:;\n\nhi\n",
			from:  "alice@example.org",
			rcpts: []string{"secret@x"},
		},
		{
			name:  "Bcc kept without -t",
			msg:   "Bcc: secret@x\n\nhi\n",
			p:     params(func(p *Params) { p.ArgRecipients = []string{"secret@x"} }),
			want:  "Bcc: secret@x\nFrom: alice@example.org\n" + testDate + "Message-ID: <ID>\n\nhi\n",
			from:  "alice@example.org",
			rcpts: []string{"secret@x"},
		},
		{
			name:  "-t with a group and a bare name",
			msg:   "To: undisclosed-recipients:;\nCc: team: a@x, b@x;, root\n\nhi\n",
			p:     params(func(p *Params) { p.ExtractRecipients = true }),
			want:  "To: undisclosed-recipients:;\nCc: team: a@x, b@x;, root@example.org\nFrom: alice@example.org\n" + testDate + "Message-ID: <ID>\n\nhi\n",
			from:  "alice@example.org",
			rcpts: []string{"a@x", "b@x", "root@example.org"},
		},
		{
			name: "-t adds to command-line recipients, deduplicating",
			msg:  "To: B@X, c@x\n\nhi\n",
			p: params(func(p *Params) {
				p.ExtractRecipients, p.ArgRecipients = true, []string{"a@x", "b@x"}
			}),
			want:  "To: B@X, c@x\nFrom: alice@example.org\n" + testDate + "Message-ID: <ID>\n\nhi\n",
			from:  "alice@example.org",
			rcpts: []string{"a@x", "b@x", "c@x"},
		},
		{
			name: "Resent- headers: only Resent- recipients, Resent- headers added",
			msg: "From: orig@x\nTo: orig-rcpt@x\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <o@x>\n" +
				"Resent-To: new@x\nResent-Bcc: hidden@x\n\nhi\n",
			p: params(func(p *Params) { p.ExtractRecipients = true }),
			want: "From: orig@x\nTo: orig-rcpt@x\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <o@x>\n" +
				"Resent-To: new@x\nResent-From: alice@example.org\nResent-" + testDate + "Resent-Message-ID: <ID>\n\nhi\n",
			from:  "alice@example.org",
			rcpts: []string{"new@x", "hidden@x"},
		},
		{
			name:  "command-line lists and display names",
			msg:   "To: x@y\n\n",
			p:     params(func(p *Params) { p.ArgRecipients = []string{"Bob <bob@x>", "root", "<ops>"} }),
			want:  "To: x@y\nFrom: alice@example.org\n" + testDate + "Message-ID: <ID>\n\n",
			from:  "alice@example.org",
			rcpts: []string{"bob@x", "root@example.org", "ops@example.org"},
		},
		{
			name:  "non-canonical input is canonicalized",
			msg:   "To: x@y\rSubject: s\n\nbody",
			p:     params(func(p *Params) { p.ArgRecipients = []string{"x@y"} }),
			want:  "To: x@y\nSubject: s\nFrom: alice@example.org\n" + testDate + "Message-ID: <ID>\n\nbody\n",
			from:  "alice@example.org",
			rcpts: []string{"x@y"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pr, err := Prepare([]byte(crlfs(tt.msg)), tt.p)
			if err != nil {
				t.Fatal(err)
			}
			want := crlfs(tt.want)
			if got := redactID(string(pr.Message)); got != want {
				t.Errorf("message:\n got %q\nwant %q", got, want)
			}
			if pr.From != tt.from {
				t.Errorf("From = %q, want %q", pr.From, tt.from)
			}
			if !reflect.DeepEqual(pr.Recipients, tt.rcpts) {
				t.Errorf("Recipients = %q, want %q", pr.Recipients, tt.rcpts)
			}
		})
	}
}

func TestPrepareMessageIDUnique(t *testing.T) {
	p := params(func(p *Params) { p.ArgRecipients = []string{"b@x"} })
	a, err := Prepare(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Prepare(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	ida, idb := msgIDRe.FindString(string(a.Message)), msgIDRe.FindString(string(b.Message))
	if ida == "" || ida == idb {
		t.Errorf("Message-IDs %q and %q: want two distinct, well-formed ones", ida, idb)
	}
}

func TestPrepareEightBit(t *testing.T) {
	tests := []struct {
		name           string
		msg            string
		p              Params
		eightBit, utf8 bool
	}{
		{"ascii", "To: b@x\n\nhi\n", params(func(p *Params) { p.ArgRecipients = []string{"b@x"} }), false, false},
		{"8-bit body", "To: b@x\n\nh\xe9\n", params(func(p *Params) { p.ArgRecipients = []string{"b@x"} }), true, false},
		{"utf-8 subject", "To: b@x\nSubject: caf\xc3\xa9\n\nhi\n", params(func(p *Params) { p.ArgRecipients = []string{"b@x"} }), true, true},
		{"utf-8 recipient", "To: b@x\n\nhi\n", params(func(p *Params) { p.ArgRecipients = []string{"jos\xc3\xa9@x"} }), false, true},
		{"utf-8 sender", "To: b@x\n\nhi\n", params(func(p *Params) {
			p.Sender, p.SenderSet, p.ArgRecipients = "jos\xc3\xa9@x", true, []string{"b@x"}
		}), true, true}, // the added From: shows the sender
		// An added From: with a non-ASCII -F name is RFC 2047 encoded, so
		// it does not by itself require SMTPUTF8.
		{"utf-8 full name", "To: b@x\n\nhi\n", params(func(p *Params) {
			p.FullName, p.ArgRecipients = "Jos\xc3\xa9", []string{"b@x"}
		}), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pr, err := Prepare([]byte(crlfs(tt.msg)), tt.p)
			if err != nil {
				t.Fatal(err)
			}
			if pr.EightBit != tt.eightBit || pr.UTF8 != tt.utf8 {
				t.Errorf("EightBit, UTF8 = %v, %v; want %v, %v", pr.EightBit, pr.UTF8, tt.eightBit, tt.utf8)
			}
		})
	}
}

func TestPrepareErrors(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		p    Params
		code int
		text string
	}{
		{
			name: "-t without any recipient header",
			msg:  "Subject: s\n\nhi\n",
			p:    params(func(p *Params) { p.ExtractRecipients = true }),
			code: ExUsage, text: "sendmail: no recipients found in message headers",
		},
		{
			name: "-t with only an empty group",
			msg:  "To: undisclosed-recipients:;\n\nhi\n",
			p:    params(func(p *Params) { p.ExtractRecipients = true }),
			code: ExUsage, text: "no recipients found in message headers",
		},
		{
			name: "no recipients at all",
			msg:  "Subject: s\n\nhi\n",
			p:    params(nil),
			code: ExUsage, text: "no recipients specified",
		},
		{
			name: "unparsable To with -t",
			msg:  "To: John Smith\n\nhi\n",
			p:    params(func(p *Params) { p.ExtractRecipients = true }),
			code: ExDataErr, text: "cannot parse To: header",
		},
		{
			name: "bad address in Cc with -t",
			msg:  "Cc: bad..dots@x\n\nhi\n",
			p:    params(func(p *Params) { p.ExtractRecipients = true }),
			code: ExDataErr, text: `bad address "bad..dots@x" in Cc: header`,
		},
		{
			name: "bad command-line recipient",
			msg:  "",
			p:    params(func(p *Params) { p.ArgRecipients = []string{"a b@x"} }),
			code: ExNoUser, text: `sendmail: bad recipient address "a b@x"`,
		},
		{
			name: "recipient looking like an option",
			msg:  "",
			p:    params(func(p *Params) { p.ArgRecipients = []string{"-oQ/tmp"} }),
			code: ExNoUser, text: "bad recipient address",
		},
		{
			name: "bad sender",
			msg:  "",
			p: params(func(p *Params) {
				p.Sender, p.SenderSet, p.ArgRecipients = "a@b@c", true, []string{"b@x"}
			}),
			code: ExDataErr, text: `sendmail: bad sender address "a@b@c"`,
		},
		{
			name: "no login name",
			msg:  "",
			p:    params(func(p *Params) { p.LoginName, p.ArgRecipients = "", []string{"b@x"} }),
			code: ExSoftware, text: "no login name",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Prepare([]byte(crlfs(tt.msg)), tt.p)
			var ee *ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("got %v, want an *ExitError", err)
			}
			if ee.Code != tt.code || !strings.Contains(ee.Msg, tt.text) {
				t.Errorf("got %d %q, want %d containing %q", ee.Code, ee.Msg, tt.code, tt.text)
			}
		})
	}
}

func TestParseHeader(t *testing.T) {
	msg := []byte(crlfs("A: 1\nB : 2\n  cont\nC:3\n\nD: body\n"))
	h := parseHeader(msg)
	var names []string
	for _, f := range h.fields {
		names = append(names, f.name+"="+f.value(msg))
	}
	if want := []string{"A= 1", "B= 2  cont", "C=3"}; !reflect.DeepEqual(names, want) {
		t.Errorf("fields %q, want %q", names, want)
	}
	if !h.blank || string(msg[h.end:]) != "\r\nD: body\r\n" {
		t.Errorf("header ends at %d (blank %v): rest %q", h.end, h.blank, msg[h.end:])
	}
}
