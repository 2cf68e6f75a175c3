package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/emersion/go-smtp"
)

func deliver(t *testing.T, c *Client, m *Message) ([]Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.Deliver(ctx, m)
}

func TestDeliverBodyCanonical(t *testing.T) {
	const hdr = "From: a@example.org\r\nSubject: test\r\n\r\n"
	// Each body goes out with canonical CRLF line endings: the smuggling
	// sequences become ordinary (dot-stuffed) lines inside one message.
	tests := []struct {
		name, body, want string
	}{
		{"crlf", "line 1\r\nline 2\r\n", "line 1\r\nline 2\r\n"},
		{"bare LF", "line 1\nline 2\n", "line 1\r\nline 2\r\n"},
		{"no final newline", "last line", "last line\r\n"},
		{"leading dots", ".one\r\n..two\r\n.\r\nx\r\n", ".one\r\n..two\r\n.\r\nx\r\n"},
		{`\n.\n`, "a\n.\nMAIL FROM:<evil@x>\n", "a\r\n.\r\nMAIL FROM:<evil@x>\r\n"},
		{`\n.\r`, "a\n.\rb", "a\r\n.\r\nb\r\n"},
		{`\r.\n`, "a\r.\nb", "a\r\n.\r\nb\r\n"},
		{`\r.\r`, "a\r.\rb", "a\r\n.\r\nb\r\n"},
		{`\n.\r\n`, "a\n.\r\nb", "a\r\n.\r\nb\r\n"},
		{`\r.\r\n`, "a\r.\r\nb", "a\r\n.\r\nb\r\n"},
		{`\r\n\x00.\r\n`, "a\r\n\x00.\r\nb", "a\r\n\x00.\r\nb\r\n"},
		{`\r\n.\r\r\n`, "a\r\n.\r\r\nb", "a\r\n.\r\n\r\nb\r\n"},
		{"trailing bare CR", "a\r", "a\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := &backend{}
			host, port := startServer(t, be, serverOpts{})
			c := New(testCfg(host, port, "none"), "client.test", nil)
			rcpts := []string{"one@example.net", "two@example.net"}
			res, err := deliver(t, c, &Message{
				ID: "q1", From: "a@example.org", Recipients: rcpts,
				Body: strings.NewReader(hdr + tt.body),
			})
			if err != nil {
				t.Fatalf("Deliver: %v", err)
			}
			for i, r := range res {
				if r.Recipient != rcpts[i] || r.Status != Delivered || r.Code != 250 {
					t.Errorf("result %d = %+v, want delivered 250 for %s", i, r, rcpts[i])
				}
			}
			txns, mails, _, _ := be.snapshot()
			if len(txns) != 1 || mails != 1 {
				t.Fatalf("server saw %d transactions, %d MAIL; want exactly one", len(txns), mails)
			}
			if got := strings.Join(txns[0].rcpts, ","); got != strings.Join(rcpts, ",") {
				t.Errorf("server recipients = %s", got)
			}
			if got, want := string(txns[0].body), hdr+tt.want; got != want {
				t.Errorf("server body = %q, want %q", got, want)
			}
		})
	}
}

func TestDeliverEnvelope(t *testing.T) {
	be := &backend{}
	host, port := startServer(t, be, serverOpts{utf8: true})
	c := New(testCfg(host, port, "none"), "client.test", nil)
	res, err := deliver(t, c, &Message{
		From: "", Recipients: []string{"ü@example.net"}, Body: strings.NewReader("x\r\n"),
		Size: 3, EightBit: true,
	})
	if err != nil || len(res) != 1 || res[0].Status != Delivered {
		t.Fatalf("Deliver = %+v, %v", res, err)
	}
	txns, _, _, _ := be.snapshot()
	o := txns[0].opts
	if txns[0].from != "" || o.Size != 3 || !o.UTF8 || o.Body != smtp.Body8BitMIME {
		t.Errorf("server saw from %q opts %+v; want null sender, SIZE=3, SMTPUTF8, BODY=8BITMIME", txns[0].from, o)
	}
}

func TestDeliverNeedsSMTPUTF8(t *testing.T) {
	be := &backend{}
	host, port := startServer(t, be, serverOpts{}) // no SMTPUTF8
	c := New(testCfg(host, port, "none"), "client.test", nil)
	_, err := deliver(t, c, &Message{From: "a@example.org", Recipients: []string{"b@example.net"}, Body: strings.NewReader("x"), UTF8: true})
	e := asError(t, err)
	if e.Op != "mail" || e.Temporary || !strings.Contains(e.Text, "SMTPUTF8") {
		t.Errorf("error = %+v, want permanent mail error about SMTPUTF8", e)
	}
	if _, mails, _, _ := be.snapshot(); mails != 0 {
		t.Errorf("MAIL was sent")
	}
}

func TestRecipientResults(t *testing.T) {
	rcptErr := map[string]error{
		"later@example.net": &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "mailbox busy"},
		"gone@example.net":  &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"},
		"auth@example.net":  &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"},
	}
	type want struct {
		status   Status
		code     int
		enhanced string
	}
	tests := []struct {
		name     string
		rcpts    []string
		dataErr  error
		want     []want
		wantData bool
	}{
		{
			name:  "mixed",
			rcpts: []string{"ok@example.net", "later@example.net", "gone@example.net"},
			want:  []want{{Delivered, 250, "2.0.0"}, {Deferred, 450, "4.2.1"}, {Failed, 550, "5.1.1"}},
		},
		{
			name:  "530 is a setup problem",
			rcpts: []string{"auth@example.net"},
			want:  []want{{Deferred, 530, "5.7.0"}},
		},
		{
			name:  "all rejected: no DATA",
			rcpts: []string{"later@example.net", "gone@example.net"},
			want:  []want{{Deferred, 450, "4.2.1"}, {Failed, 550, "5.1.1"}},
		},
		{
			name:    "DATA 451 defers accepted",
			rcpts:   []string{"ok@example.net", "gone@example.net", "ok2@example.net"},
			dataErr: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"},
			want:    []want{{Deferred, 451, "4.3.0"}, {Failed, 550, "5.1.1"}, {Deferred, 451, "4.3.0"}},
		},
		{
			name:    "DATA 554 fails accepted",
			rcpts:   []string{"ok@example.net", "later@example.net"},
			dataErr: &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "content rejected"},
			want:    []want{{Failed, 554, "5.6.0"}, {Deferred, 450, "4.2.1"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := &backend{rcptErr: rcptErr, dataErr: tt.dataErr}
			host, port := startServer(t, be, serverOpts{})
			c := New(testCfg(host, port, "none"), "client.test", nil)
			res, err := deliver(t, c, &Message{From: "a@example.org", Recipients: tt.rcpts, Body: strings.NewReader("hi\r\n")})
			if err != nil {
				t.Fatalf("Deliver: %v", err)
			}
			if len(res) != len(tt.want) {
				t.Fatalf("got %d results, want %d", len(res), len(tt.want))
			}
			accepted := 0
			for i, w := range tt.want {
				r := res[i]
				if r.Recipient != tt.rcpts[i] || r.Status != w.status || r.Code != w.code || r.Enhanced != w.enhanced || r.Text == "" {
					t.Errorf("result %d = %+v, want %v %d %s", i, r, w.status, w.code, w.enhanced)
				}
				if _, rejected := rcptErr[tt.rcpts[i]]; !rejected {
					accepted++
				}
			}
			_, _, _, dataCalls := be.snapshot()
			if wantData := accepted > 0; (dataCalls > 0) != wantData {
				t.Errorf("server DATA calls = %d, want DATA %v", dataCalls, wantData)
			}
		})
	}
}

func TestMailRejected(t *testing.T) {
	tests := []struct {
		name     string
		err      *smtp.SMTPError
		wantTemp bool
	}{
		{"550 permanent", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 8}, Message: "bad sender"}, false},
		{"552 size permanent", &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "too big"}, false},
		{"451 temporary", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"}, true},
		{"421 temporary", &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "closing"}, true},
		{"530 auth required temporary", &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}, true},
		{"554 5.7.11 encryption required temporary", &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 11}, Message: "TLS first"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := &backend{mailErr: tt.err}
			host, port := startServer(t, be, serverOpts{})
			c := New(testCfg(host, port, "none"), "client.test", nil)
			res, err := deliver(t, c, &Message{From: "a@example.org", Recipients: []string{"b@example.net"}, Body: strings.NewReader("x")})
			if res != nil {
				t.Errorf("results = %+v, want nil", res)
			}
			e := asError(t, err)
			wantEnh := enhancedString(tt.err.EnhancedCode)
			if e.Op != "mail" || e.Temporary != tt.wantTemp || e.Code != tt.err.Code || e.Enhanced != wantEnh || e.Text != tt.err.Message {
				t.Errorf("error = %+v, want op mail temporary %v %d %s %q", e, tt.wantTemp, tt.err.Code, wantEnh, tt.err.Message)
			}
			var se *smtp.SMTPError
			if !errors.As(err, &se) {
				t.Errorf("errors.As(*smtp.SMTPError) failed")
			}
		})
	}
}

func TestRcpt421IsConnectionLevel(t *testing.T) {
	be := &backend{rcptErr: map[string]error{
		"b@example.net": &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "shutting down"},
	}}
	host, port := startServer(t, be, serverOpts{})
	c := New(testCfg(host, port, "none"), "client.test", nil)
	res, err := deliver(t, c, &Message{From: "a@example.org", Recipients: []string{"a@example.net", "b@example.net"}, Body: strings.NewReader("x")})
	e := asError(t, err)
	if res != nil || e.Op != "rcpt" || !e.Temporary || e.Code != 421 {
		t.Errorf("Deliver = %+v, %+v; want nil and temporary rcpt 421", res, e)
	}
}

// scripted answers SMTP commands from a raw connection: greeting, then
// reply(cmd) for each command line; DATA content is read up to the final
// dot and handed to dataEnd, which may return "" to hang up instead.
func scripted(greeting string, dataEnd func(body string) string) func(net.Conn, <-chan struct{}) {
	return func(c net.Conn, done <-chan struct{}) {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(c)
		io.WriteString(c, greeting)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			verb := strings.ToUpper(strings.Fields(line + " x")[0])
			switch verb {
			case "EHLO":
				io.WriteString(c, "250-mx.test\r\n250 8BITMIME\r\n")
			case "DATA":
				body, ok := readData(c, br)
				if !ok {
					return
				}
				r := dataEnd(body)
				if r == "" {
					return
				}
				io.WriteString(c, r)
			case "QUIT":
				io.WriteString(c, "221 bye\r\n")
				return
			default:
				io.WriteString(c, "250 ok\r\n")
			}
		}
	}
}

// readData answers DATA with 354 and reads the message up to the final
// dot; false if the connection ended first.
func readData(c net.Conn, br *bufio.Reader) (string, bool) {
	io.WriteString(c, "354 go ahead\r\n")
	var body strings.Builder
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return "", false
		}
		if l == ".\r\n" {
			return body.String(), true
		}
		body.WriteString(l)
	}
}

func TestConnectionLevelErrors(t *testing.T) {
	tests := []struct {
		name    string
		handler func(net.Conn, <-chan struct{})
		op      string
		code    int
	}{
		{"421 greeting", scripted("421 4.3.2 Service not available\r\n", nil), "greeting", 421},
		{"554 greeting", scripted("554 5.3.2 No service here\r\n", nil), "greeting", 554},
		{"garbage greeting", scripted("hello there\r\n", nil), "greeting", 0},
		{"hang up at greeting", func(net.Conn, <-chan struct{}) {}, "greeting", 0},
		{"421 after data", scripted("220 mx.test\r\n", func(string) string { return "421 4.4.2 timeout\r\n" }), "data", 421},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, port := fakeServer(t, tt.handler)
			c := New(testCfg(host, port, "none"), "client.test", nil)
			res, err := deliver(t, c, &Message{From: "a@example.org", Recipients: []string{"b@example.net"}, Body: strings.NewReader("x")})
			e := asError(t, err)
			if res != nil || e.Op != tt.op || !e.Temporary || e.Code != tt.code || e.Text == "" {
				t.Errorf("Deliver = %+v, %+v; want nil and temporary %s %d", res, e, tt.op, tt.code)
			}
		})
	}
}

func TestConnectRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	c := New(testCfg("127.0.0.1", port, "none"), "client.test", nil)
	_, err = deliver(t, c, &Message{Recipients: []string{"b@example.net"}, Body: strings.NewReader("x")})
	if e := asError(t, err); e.Op != "connect" || !e.Temporary {
		t.Errorf("error = %+v, want temporary connect error", e)
	}
}

func TestNetworkErrorDuringData(t *testing.T) {
	got := make(chan string, 1)
	host, port := fakeServer(t, scripted("220 mx.test\r\n", func(body string) string {
		got <- body
		return "" // hang up instead of answering the final dot
	}))
	c := New(testCfg(host, port, "none"), "client.test", nil)
	res, err := deliver(t, c, &Message{From: "a@example.org", Recipients: []string{"b@example.net", "c@example.net"}, Body: strings.NewReader("x\r\n")})
	if err != nil {
		t.Fatalf("Deliver error = %v, want per-recipient results", err)
	}
	for _, r := range res {
		if r.Status != Deferred || r.Code != 0 || r.Text == "" {
			t.Errorf("result = %+v, want deferred, code 0, error text", r)
		}
	}
	if body := <-got; body != "x\r\n" {
		t.Errorf("server got %q", body)
	}
}

func TestBodyReadErrorAbortsData(t *testing.T) {
	be := &backend{}
	host, port := startServer(t, be, serverOpts{})
	c := New(testCfg(host, port, "none"), "client.test", nil)
	body := io.MultiReader(strings.NewReader("Subject: partial\r\n\r\nfirst part\r\n"), iotest.ErrReader(errors.New("disk on fire")))
	res, err := deliver(t, c, &Message{From: "a@example.org", Recipients: []string{"b@example.net"}, Body: body})
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	if r := res[0]; r.Status != Deferred || r.Code != 0 || !strings.Contains(r.Text, "disk on fire") {
		t.Errorf("result = %+v, want deferred with the read error", r)
	}
	// The server must not have accepted a truncated message.
	deadline := time.Now().Add(5 * time.Second)
	for {
		txns, _, _, dataCalls := be.snapshot()
		if len(txns) != 0 {
			t.Fatalf("server accepted a truncated message: %q", txns[0].body)
		}
		if dataCalls > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNoRecipients(t *testing.T) {
	c := New(testCfg("127.0.0.1", 1, "none"), "client.test", nil)
	res, err := c.Deliver(context.Background(), &Message{From: "a@example.org"})
	if res != nil || err != nil {
		t.Errorf("Deliver = %v, %v; want nothing, without connecting", res, err)
	}
}

func TestHungServer(t *testing.T) {
	for _, mode := range []string{"none", "starttls", "opportunistic", "implicit"} {
		t.Run(mode, func(t *testing.T) {
			host, port := fakeServer(t, hang)
			cfg := testCfg(host, port, mode)
			cfg.CommandTimeout.Duration = 200 * time.Millisecond
			c := New(cfg, "client.test", nil)
			start := time.Now()
			_, err := c.Deliver(context.Background(), &Message{Recipients: []string{"b@example.net"}, Body: strings.NewReader("x")})
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("Deliver took %v", d)
			}
			e := asError(t, err)
			if !e.Temporary || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("error = %+v (%v), want temporary timeout", e, e.Err)
			}
		})
	}
}

func TestContextCancel(t *testing.T) {
	host, port := fakeServer(t, hang)
	cfg := testCfg(host, port, "starttls")
	cfg.CommandTimeout.Duration = time.Minute
	c := New(cfg, "client.test", nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.Deliver(ctx, &Message{Recipients: []string{"b@example.net"}, Body: strings.NewReader("x")})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Deliver took %v after cancel", d)
	}
	e := asError(t, err)
	if !e.Temporary || !errors.Is(err, context.Canceled) {
		t.Errorf("error = %+v, want temporary and context.Canceled", e)
	}
}

func TestFinalReplyAny2xxIsDelivered(t *testing.T) {
	host, port := fakeServer(t, scripted("220 mx.test\r\n", func(string) string { return "251 2.0.0 accepted anyway\r\n" }))
	c := New(testCfg(host, port, "none"), "client.test", nil)
	res, err := deliver(t, c, &Message{From: "a@example.org", Recipients: []string{"b@example.net"}, Body: strings.NewReader("x")})
	if err != nil || res[0].Status != Delivered || res[0].Code != 251 || res[0].Text != "accepted anyway" {
		t.Errorf("Deliver = %+v, %v; want delivered 251", res, err)
	}
}

func TestSTARTTLSInjection(t *testing.T) {
	// The server (or a man in the middle) appends a cleartext reply to its
	// STARTTLS answer, hoping it is read as coming from inside TLS.
	host, port := fakeServer(t, func(c net.Conn, done <-chan struct{}) {
		br := bufio.NewReader(c)
		io.WriteString(c, "220 mx.test\r\n")
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			switch {
			case strings.HasPrefix(line, "EHLO"):
				io.WriteString(c, "250-mx.test\r\n250 STARTTLS\r\n")
			case strings.HasPrefix(line, "STARTTLS"):
				io.WriteString(c, "220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n")
			default:
				return
			}
		}
	})
	c := New(testCfg(host, port, "starttls"), "client.test", nil)
	_, err := deliver(t, c, &Message{From: "a@example.org", Recipients: []string{"b@example.net"}, Body: strings.NewReader("x")})
	if e := asError(t, err); e.Op != "starttls" || !e.Temporary || !strings.Contains(e.Text, "injection") {
		t.Errorf("error = %+v, want temporary starttls injection error", e)
	}
}

// TestTimeoutsFire: a server that stops answering at each phase is given
// up on after that phase's timeout, and the attempt is deferred.
func TestTimeoutsFire(t *testing.T) {
	var release chan struct{} // per subtest: lets the hung data handler end
	tests := []struct {
		name    string
		handler func(net.Conn, <-chan struct{})
		op      string
	}{
		{"greeting", hang, "greeting"},
		{"command", func(c net.Conn, done <-chan struct{}) {
			br := bufio.NewReader(c)
			io.WriteString(c, "220 mx.test\r\n")
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if strings.HasPrefix(line, "MAIL") {
					<-done // no answer
					return
				}
				io.WriteString(c, "250 ok\r\n")
			}
		}, "mail"},
		{"data", scripted("220 mx.test\r\n", func(string) string { <-release; return "" }), "data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release = make(chan struct{})
			host, port := fakeServer(t, tt.handler)
			t.Cleanup(func() { close(release) }) // before fakeServer's
			cfg := testCfg(host, port, "none")
			cfg.CommandTimeout.Duration = 100 * time.Millisecond
			cfg.DataTimeout.Duration = 100 * time.Millisecond
			c := New(cfg, "client.test", nil)
			res, err := deliver(t, c, &Message{From: "a@example.org", Recipients: []string{"b@example.net"}, Body: strings.NewReader("x\r\n")})
			if tt.op == "data" {
				// DATA's outcome is per recipient: deferred, as the
				// server may or may not have the message.
				if err != nil || res[0].Status != Deferred || !strings.Contains(res[0].Text, "timed out") {
					t.Errorf("Deliver = %+v, %v; want deferred after a timeout", res, err)
				}
				return
			}
			e := asError(t, err)
			if e.Op != tt.op || !e.Temporary || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("error = %+v, want temporary %s timeout", e, tt.op)
			}
		})
	}
}
