package bounce

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/outboxmta/outbox/internal/address"
	"github.com/outboxmta/outbox/spool"
)

const original = "From: App <app@example.org>\r\nMessage-ID: <orig.1@example.org>\r\nSubject: invoice\r\n\r\nthe body\r\n"

var opts = &Options{
	Hostname:     "relay.example.com",
	Postmaster:   []string{"ops@example.net"},
	LocalDomains: []string{"example.com", "relay.example.com"},
	Aliases:      address.NewAliases(map[string]string{"root": "admin@example.net"}, "example.com", "relay.example.com"),
}

var (
	arrived = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	tried   = time.Date(2025, 3, 1, 10, 5, 0, 0, time.UTC)
)

// failedMessage queues a message with one delivered, two failed and one
// NOTIFY=NEVER recipient, as the runner leaves it, and returns its
// envelope and body.
func failedMessage(t *testing.T, sp *spool.Spool, mod func(*spool.Envelope), body string) *spool.Envelope {
	t.Helper()
	env := &spool.Envelope{
		From: "app@example.org", EnvID: "inv-42", Arrived: arrived,
		Recipients: []spool.Recipient{
			{Addr: "ok@example.net", Status: spool.Delivered, Reply: "250 2.0.0 ok"},
			{Addr: "gone@example.net", Status: spool.Failed, Reply: "550 5.1.1 no such user",
				Remote: "smtp.example.net", Updated: tried, DSNOrcpt: "rfc822;Gone@Example.NET"},
			{Addr: "late@example.net", Status: spool.Failed, DSNStatus: "4.4.7", Updated: tried,
				Reply: "expired after 5d0h0m0s in the queue; last error: upstream connect: connection refused"},
			{Addr: "quiet@example.net", Status: spool.Failed, Reply: "550 5.1.1 no", DSNNotify: "NEVER"},
		},
	}
	if mod != nil {
		mod(env)
	}
	if err := sp.Put(spool.FailedQ, env, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	return env
}

// parsed is a bounce taken apart again with the standard library.
type parsed struct {
	env    *spool.Envelope
	header mail.Header
	text   string
	global textproto.MIMEHeader   // per-message fields
	rcpts  []textproto.MIMEHeader // per-recipient fields
	last   string                 // content type of the third part
	orig   string                 // its content
}

func queueBounce(t *testing.T, mod func(*spool.Envelope), body string) parsed {
	t.Helper()
	sp, err := spool.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	env := failedMessage(t, sp, mod, body)
	_, msg, err := sp.Read(spool.FailedQ, env.ID)
	if err != nil {
		t.Fatal(err)
	}
	benv, err := Queue(sp, opts, env, bytes.NewReader(msg), Wanted(env), tried.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	benv, raw, err := sp.Read(spool.Queue, benv.ID)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\n")) {
		t.Error("bounce has bare LF line endings")
	}
	return parse(t, benv, raw)
}

func parse(t *testing.T, benv *spool.Envelope, raw []byte) parsed {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	p := parsed{env: benv, header: m.Header}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q (%v)", m.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var parts []*multipart.Part
	var contents [][]byte
	for {
		part, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(part)
		if err != nil {
			t.Fatal(err)
		}
		parts, contents = append(parts, part), append(contents, b)
	}
	if len(parts) != 3 {
		t.Fatalf("%d parts, want 3", len(parts))
	}
	if ct := parts[0].Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("first part is %q", ct)
	}
	text, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(contents[0])))
	if err != nil {
		t.Fatal(err)
	}
	p.text = string(text)
	if ct := parts[1].Header.Get("Content-Type"); ct != "message/delivery-status" {
		t.Errorf("second part is %q", ct)
	}
	tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(contents[1], "\r\n"...))))
	if p.global, err = tr.ReadMIMEHeader(); err != nil {
		t.Fatalf("per-message fields: %v", err)
	}
	for {
		h, err := tr.ReadMIMEHeader()
		if len(h) > 0 {
			p.rcpts = append(p.rcpts, h)
		}
		if err != nil {
			break
		}
	}
	p.last, p.orig = parts[2].Header.Get("Content-Type"), string(contents[2])
	return p
}

func TestReport(t *testing.T) {
	p := queueBounce(t, nil, original)

	if p.env.From != "" || p.env.Origin.Kind != "bounce" || len(p.env.Recipients) != 1 ||
		p.env.Recipients[0].Addr != "app@example.org" {
		t.Errorf("bounce envelope from <%s> to %+v origin %q", p.env.From, p.env.Recipients, p.env.Origin.Kind)
	}
	for k, want := range map[string]string{
		"From":           "Mail Delivery System <MAILER-DAEMON@relay.example.com>",
		"To":             "<app@example.org>",
		"Auto-Submitted": "auto-replied",
		"In-Reply-To":    "<orig.1@example.org>",
		"Message-Id":     "<" + p.env.ID + "@relay.example.com>",
		"Mime-Version":   "1.0",
	} {
		if got := p.header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if _, err := p.header.Date(); err != nil {
		t.Errorf("Date: %v", err)
	}

	for _, want := range []string{"<gone@example.net>: 550 5.1.1 no such user", "<late@example.net>: expired after"} {
		if !strings.Contains(p.text, want) {
			t.Errorf("text part lacks %q:\n%s", want, p.text)
		}
	}
	if strings.Contains(p.text, "quiet@") || strings.Contains(p.text, "ok@") {
		t.Errorf("text part names a recipient that is not bounced:\n%s", p.text)
	}

	for k, want := range map[string]string{
		"Reporting-Mta":        "dns; relay.example.com",
		"Original-Envelope-Id": "inv-42",
		"Arrival-Date":         arrived.Format(time.RFC1123Z),
	} {
		if got := p.global.Get(k); got != want {
			t.Errorf("per-message %s: %q, want %q", k, got, want)
		}
	}
	if p.global.Get("X-Outbox-Queue-Id") == "" {
		t.Error("no X-Outbox-Queue-ID")
	}
	want := []map[string]string{
		{"Final-Recipient": "rfc822; gone@example.net", "Original-Recipient": "rfc822; Gone@Example.NET",
			"Action": "failed", "Status": "5.1.1", "Remote-Mta": "dns; smtp.example.net",
			"Diagnostic-Code": "smtp; 550 5.1.1 no such user", "Last-Attempt-Date": tried.Format(time.RFC1123Z)},
		{"Final-Recipient": "rfc822; late@example.net", "Original-Recipient": "", "Action": "failed",
			"Status": "4.4.7", "Remote-Mta": "",
			"Diagnostic-Code": "X-Outbox; expired after 5d0h0m0s in the queue; last error: upstream connect: connection refused"},
	}
	if len(p.rcpts) != len(want) {
		t.Fatalf("%d recipient blocks, want %d: %v", len(p.rcpts), len(want), p.rcpts)
	}
	for i, w := range want {
		for k, v := range w {
			if got := p.rcpts[i].Get(k); got != v {
				t.Errorf("recipient %d %s: %q, want %q", i, k, got, v)
			}
		}
	}

	if p.last != "message/rfc822" || p.orig != original {
		t.Errorf("returned %s:\n%q\nwant the original whole:\n%q", p.last, p.orig, original)
	}
}

func TestReportHeadersOnly(t *testing.T) {
	big := "Subject: big\r\nMessage-ID: <big@example.org>\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", MaxFull/16)
	for _, tt := range []struct {
		name string
		mod  func(*spool.Envelope)
		body string
		head string
	}{
		{"RET=HDRS", func(e *spool.Envelope) { e.DSNRet = "HDRS" }, original, original[:strings.Index(original, "the body")]},
		{"larger than MaxFull", nil, big, big[:strings.Index(big, "0123")]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := queueBounce(t, tt.mod, tt.body)
			if p.last != "text/rfc822-headers" || p.orig != tt.head {
				t.Errorf("returned %s:\n%q\nwant the header only:\n%q", p.last, p.orig, tt.head)
			}
		})
	}
}

func TestReportFullWhenAsked(t *testing.T) {
	p := queueBounce(t, func(e *spool.Envelope) { e.DSNRet = "FULL"; e.EnvID = "" }, original)
	if p.last != "message/rfc822" || p.orig != original {
		t.Errorf("RET=FULL returned %s", p.last)
	}
	if _, ok := p.global["Original-Envelope-Id"]; ok {
		t.Error("Original-Envelope-Id without ENVID")
	}
}

// Submitter-supplied values (ENVID, ORCPT) cannot add fields.
func TestReportFieldInjection(t *testing.T) {
	p := queueBounce(t, func(e *spool.Envelope) {
		e.EnvID = "x\r\nAction: delivered"
		e.Recipients[1].DSNOrcpt = "rfc822;a@b\r\nStatus: 2.0.0"
	}, original)
	if p.global.Get("Action") != "" || p.rcpts[0].Get("Status") != "5.1.1" || len(p.rcpts[0]["Status"]) != 1 {
		t.Errorf("injected fields: %v %v", p.global, p.rcpts[0])
	}
}

func TestWanted(t *testing.T) {
	env := &spool.Envelope{Recipients: []spool.Recipient{
		{Addr: "a", Status: spool.Failed},
		{Addr: "b", Status: spool.Failed, DSNNotify: "NEVER"},
		{Addr: "c", Status: spool.Failed, DSNNotify: "SUCCESS,DELAY"},
		{Addr: "d", Status: spool.Failed, DSNNotify: "delay,failure"},
		{Addr: "e", Status: spool.Delivered},
		{Addr: "f", Status: spool.Pending},
	}}
	var got []string
	for _, rc := range Wanted(env) {
		got = append(got, rc.Addr)
	}
	if strings.Join(got, " ") != "a d" {
		t.Errorf("Wanted = %v, want [a d]", got)
	}
}

func TestTo(t *testing.T) {
	for sender, want := range map[string]string{
		"app@example.org":        "app@example.org",
		"root@relay.example.com": "admin@example.net",
		"Root@Example.com":       "admin@example.net",
		"www-data@example.com":   "ops@example.net",
		"cron":                   "ops@example.net",
		"root":                   "admin@example.net",
	} {
		if got := strings.Join(opts.To(sender), ","); got != want {
			t.Errorf("To(%q) = %s, want %s", sender, got, want)
		}
	}
}
