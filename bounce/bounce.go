// Package bounce writes delivery status notifications (RFC 3464, in an RFC
// 6522 multipart/report) for messages that failed, and queues them in the
// spool like any other message.
//
// A bounce names every failed recipient that asked for failure notices
// (NOTIFY absent, or listing FAILURE), with the reply that sealed its fate,
// and returns the original message (RET=FULL or unset, up to MaxFull
// bytes) or only its header (RET=HDRS, or larger). It has the null
// envelope sender, so it is never bounced itself.
package bounce

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/textproto"
	"strings"
	"time"

	"github.com/outboxmta/outbox/internal/address"
	"github.com/outboxmta/outbox/spool"
)

// MaxFull is the largest original message a bounce returns whole; larger
// ones come back as their header only, so a bounce of a big attachment
// does not travel back through the smarthost in full.
const MaxFull = 256 << 10

// Options says who reports failures and to whom.
type Options struct {
	// Hostname is the Reporting-MTA and the domain of MAILER-DAEMON.
	Hostname string
	// Postmaster receives the bounces for senders without a domain or in
	// one of LocalDomains that have no alias: mail to them would not
	// reach anyone, since nothing here delivers locally.
	Postmaster   []string
	LocalDomains []string
	Aliases      address.Aliases
}

// Wanted returns the failed recipients of env that asked for a failure
// notice: those without NOTIFY, or with FAILURE in it.
func Wanted(env *spool.Envelope) []spool.Recipient {
	var out []spool.Recipient
	for _, rc := range env.Recipients {
		if rc.Status == spool.Failed && notifyFailure(rc.DSNNotify) {
			out = append(out, rc)
		}
	}
	return out
}

func notifyFailure(notify string) bool {
	if notify == "" {
		return true
	}
	for n := range strings.SplitSeq(notify, ",") {
		if strings.EqualFold(strings.TrimSpace(n), "FAILURE") {
			return true
		}
	}
	return false
}

// To returns whom the bounce for mail from sender goes to: the sender, or
// for a local sender its alias, else the postmaster.
func (o *Options) To(sender string) []string {
	_, domain, ok := strings.Cut(sender, "@")
	if ok && !o.local(domain) {
		return []string{sender}
	}
	if t := o.Aliases.Expand(sender); len(t) != 1 || !strings.EqualFold(t[0], sender) {
		return t
	}
	return o.Postmaster
}

func (o *Options) local(domain string) bool {
	for _, d := range o.LocalDomains {
		if strings.EqualFold(d, domain) {
			return true
		}
	}
	return false
}

// Queue writes the bounce for env, whose message is body, about rcpts
// (see Wanted), into the spool's queue and returns its envelope once it
// is durable. The bounce has the null sender and origin kind "bounce".
func Queue(sp *spool.Spool, o *Options, env *spool.Envelope, body io.Reader, rcpts []spool.Recipient, now time.Time) (*spool.Envelope, error) {
	to := o.To(env.From)
	if len(to) == 0 {
		return nil, fmt.Errorf("bounce: no postmaster address for local sender <%s>", env.From)
	}
	w, err := sp.Create(spool.Queue)
	if err != nil {
		return nil, err
	}
	r := &report{o: o, env: env, rcpts: rcpts, to: to, id: w.ID(), now: now}
	bw := bufio.NewWriter(w)
	if err := r.write(bw, body); err == nil {
		err = bw.Flush()
	}
	if err != nil {
		w.Abort()
		return nil, fmt.Errorf("bounce: write %s: %w", w.ID(), err)
	}
	benv := &spool.Envelope{Origin: spool.Origin{Kind: "bounce"}, EightBit: r.eightBit, UTF8: r.utf8}
	for _, t := range to {
		benv.Recipients = append(benv.Recipients, spool.Recipient{Addr: t, Status: spool.Pending})
	}
	if err := w.Commit(benv); err != nil {
		return nil, err
	}
	return benv, nil
}

// report is one bounce being written.
type report struct {
	o     *Options
	env   *spool.Envelope
	rcpts []spool.Recipient
	to    []string
	id    string // the bounce's queue ID
	now   time.Time

	eightBit, utf8 bool // what the returned content needs
}

func (r *report) write(w io.Writer, body io.Reader) error {
	orig := bufio.NewReader(body)
	header, err := readHeader(orig)
	if err != nil {
		return err
	}
	full := !strings.EqualFold(r.env.DSNRet, "HDRS") && r.env.Size <= MaxFull
	r.eightBit = full && r.env.EightBit
	r.utf8 = (full && r.env.UTF8) || !ascii(r.env.From) || !ascii(strings.Join(r.to, ""))

	mw := multipart.NewWriter(w)
	r.writeHeader(w, header, mw.Boundary())

	tw, err := mw.CreatePart(textproto.MIMEHeader{
		"Content-Type":              {"text/plain; charset=utf-8"},
		"Content-Transfer-Encoding": {"quoted-printable"},
		"Content-Description":       {"Notification"},
	})
	if err != nil {
		return err
	}
	qp := quotedprintable.NewWriter(tw)
	if _, err := io.WriteString(qp, r.text()); err != nil {
		return err
	}
	if err := qp.Close(); err != nil {
		return err
	}

	dw, err := mw.CreatePart(textproto.MIMEHeader{
		"Content-Type":        {"message/delivery-status"},
		"Content-Description": {"Delivery report"},
	})
	if err != nil {
		return err
	}
	if _, err := io.WriteString(dw, r.status()); err != nil {
		return err
	}

	ctype, desc := "message/rfc822", "Undelivered Message"
	if !full {
		ctype, desc = "text/rfc822-headers", "Undelivered Message Headers"
	}
	ow, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {ctype}, "Content-Description": {desc}})
	if err != nil {
		return err
	}
	if _, err := ow.Write(header); err != nil {
		return err
	}
	if full {
		if _, err := io.Copy(ow, orig); err != nil {
			return err
		}
	}
	return mw.Close()
}

// readHeader returns the header section of the message in br, up to and
// including the empty line that ends it (or all of a message without
// one), bounded by MaxFull.
func readHeader(br *bufio.Reader) ([]byte, error) {
	var h []byte
	for len(h) < MaxFull {
		line, err := br.ReadSlice('\n')
		h = append(h, line...)
		if err == io.EOF {
			break
		}
		if err != nil && err != bufio.ErrBufferFull {
			return nil, err
		}
		if err == nil && (string(line) == "\r\n" || string(line) == "\n") {
			break
		}
	}
	return h, nil
}

func (r *report) writeHeader(w io.Writer, orig []byte, boundary string) {
	fmt.Fprintf(w, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", r.o.Hostname)
	fmt.Fprintf(w, "To: %s\r\n", angleList(r.to))
	fmt.Fprintf(w, "Subject: Undelivered Mail Returned to Sender\r\n")
	fmt.Fprintf(w, "Date: %s\r\n", r.now.Format(time.RFC1123Z))
	fmt.Fprintf(w, "Message-ID: <%s@%s>\r\n", r.id, r.o.Hostname)
	if id := messageID(orig); id != "" {
		fmt.Fprintf(w, "In-Reply-To: %s\r\nReferences: %s\r\n", id, id)
	}
	fmt.Fprintf(w, "Auto-Submitted: auto-replied\r\n")
	fmt.Fprintf(w, "MIME-Version: 1.0\r\n")
	fmt.Fprintf(w, "Content-Type: %s\r\n\r\n", mime.FormatMediaType("multipart/report",
		map[string]string{"report-type": "delivery-status", "boundary": boundary}))
}

// messageID returns the original's Message-ID if it has a plain one.
func messageID(header []byte) string {
	// A malformed header still yields the fields read before the error.
	h, _ := textproto.NewReader(bufio.NewReader(bytes.NewReader(header))).ReadMIMEHeader()
	id := strings.TrimSpace(h.Get("Message-Id"))
	if !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, ">") || strings.ContainsAny(id, " \t\r\n") {
		return ""
	}
	return id
}

// text is the human-readable part.
func (r *report) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "This is the mail system at host %s.\r\n\r\n", r.o.Hostname)
	fmt.Fprintf(&b, "Your message could not be delivered to one or more recipients.\r\n")
	fmt.Fprintf(&b, "It is attached below; the delivery report says why.\r\n\r\n")
	sender := r.env.From
	if sender == "" {
		sender = "<>"
	}
	fmt.Fprintf(&b, "Sender: %s\r\nQueue ID: %s\r\n\r\n", sender, r.env.ID)
	for _, rc := range r.rcpts {
		fmt.Fprintf(&b, "<%s>: %s\r\n", rc.Addr, oneLine(rc.Reply))
	}
	return b.String()
}

// status is the message/delivery-status part.
func (r *report) status() string {
	var b strings.Builder
	field := func(name, value string) {
		if value != "" {
			b.WriteString(fold(name + ": " + oneLine(value)))
		}
	}
	field("Reporting-MTA", "dns; "+r.o.Hostname)
	field("X-Outbox-Queue-ID", r.env.ID)
	field("Original-Envelope-Id", r.env.EnvID)
	field("Arrival-Date", r.env.Arrived.Format(time.RFC1123Z))
	for _, rc := range r.rcpts {
		b.WriteString("\r\n")
		field("Final-Recipient", addrType(rc.Addr)+"; "+rc.Addr)
		if t, a, ok := strings.Cut(rc.DSNOrcpt, ";"); ok {
			field("Original-Recipient", strings.TrimSpace(t)+"; "+strings.TrimSpace(a))
		}
		field("Action", "failed")
		field("Status", dsnStatus(rc))
		code, text := smtpReply(rc.Reply)
		if code != "" && rc.Remote != "" {
			field("Remote-MTA", "dns; "+rc.Remote)
		}
		if code != "" {
			field("Diagnostic-Code", "smtp; "+text)
		} else if rc.Reply != "" {
			field("Diagnostic-Code", "X-Outbox; "+rc.Reply)
		}
		if !rc.Updated.IsZero() {
			field("Last-Attempt-Date", rc.Updated.Format(time.RFC1123Z))
		}
	}
	return b.String()
}

// dsnStatus returns the RFC 3463 status of a failed recipient: the one the
// runner recorded, else the enhanced code of its reply, else one by the
// reply's class.
func dsnStatus(rc spool.Recipient) string {
	if rc.DSNStatus != "" {
		return rc.DSNStatus
	}
	code, text := smtpReply(rc.Reply)
	if code == "" {
		return "5.0.0"
	}
	if f := strings.Fields(strings.TrimPrefix(text, code)); len(f) > 0 && isEnhanced(f[0], code[0]) {
		return f[0]
	}
	return code[:1] + ".0.0"
}

// smtpReply finds the SMTP reply in a recorded reply: "550 5.1.1 text", or
// the same after "upstream OP: " (a failure of the whole attempt). It
// returns the code and the reply from the code on, or "" when reply holds
// no SMTP reply (a connection error, an expiry).
func smtpReply(reply string) (code, text string) {
	s := reply
	if rest, ok := strings.CutPrefix(s, "upstream "); ok {
		if _, after, ok := strings.Cut(rest, ": "); ok {
			s = after
		}
	}
	if len(s) >= 4 && s[3] == ' ' && s[0] >= '2' && s[0] <= '5' && isDigits(s[1:3]) {
		return s[:3], s
	}
	return "", ""
}

func isEnhanced(s string, class byte) bool {
	parts := strings.Split(s, ".")
	return len(parts) == 3 && s[0] == class && isDigits(parts[0]) && isDigits(parts[1]) && isDigits(parts[2])
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// fold breaks a field longer than 78 characters at spaces into
// continuation lines (RFC 5322 2.2.3), so that a long reply stays within
// the line length limit.
func fold(line string) string {
	var b strings.Builder
	for len(line) > 78 {
		i := strings.LastIndexByte(line[:78], ' ')
		if i <= 0 {
			if i = strings.IndexByte(line, ' '); i <= 0 {
				break
			}
		}
		b.WriteString(line[:i])
		b.WriteString("\r\n ")
		line = strings.TrimLeft(line[i:], " ")
	}
	b.WriteString(line)
	b.WriteString("\r\n")
	return b.String()
}

func addrType(a string) string {
	if ascii(a) {
		return "rfc822"
	}
	return "utf-8" // RFC 6533
}

func angleList(as []string) string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = "<" + a + ">"
	}
	return strings.Join(out, ", ")
}

// oneLine keeps a field value on its line: values come from replies and
// from the submitter (ENVID, ORCPT), and must not add header fields.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func ascii(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
