package sendmail

import (
	"github.com/outboxmta/outbox/internal/address"

	"bytes"
	"crypto/rand"
	"strings"
	"time"

	"github.com/outboxmta/outbox/internal/crlf"
)

// Params is what Prepare needs besides the message.
type Params struct {
	// Sender is the envelope sender from -f, "" for the null sender. It is
	// used only when SenderSet; otherwise the sender is LoginName@Domain.
	Sender    string
	SenderSet bool
	FullName  string // display name for an added From: (-F)
	LoginName string // the invoking user's login name
	Domain    string // qualifies bare names such as "root"
	Hostname  string // right-hand side of an added Message-ID; Domain if empty
	Now       time.Time

	ExtractRecipients bool     // -t
	ArgRecipients     []string // recipients from the command line

	// Masquerade, when not "", is a full address that replaces the
	// envelope sender, unless that is the null sender ([masquerade]
	// sender). With RewriteFrom the From: header shows it too: see Prepare.
	Masquerade  string
	RewriteFrom bool
}

// Prepared is a message ready to be spooled.
type Prepared struct {
	Message []byte // canonical CRLF, header completed
	// From is the envelope sender, qualified; "" for the null sender.
	From string
	// Recipients are qualified, validated and deduplicated ignoring case,
	// in the order first seen: command line first, then headers.
	Recipients []string
	// EightBit reports a byte >= 0x80 anywhere in Message (8BITMIME).
	EightBit bool
	// UTF8 reports non-ASCII in the envelope addresses or the header block,
	// which needs SMTPUTF8 to relay.
	UTF8 bool
}

// Prepare completes msg the way Postfix's cleanup does for locally
// submitted mail and works out the envelope.
//
// Missing From:, Date: and Message-ID: are appended to the header block,
// and "To: undisclosed-recipients:;" when no To:, Cc: or Bcc: remains. The
// added From: shows the envelope sender (MAILER-DAEMON for the null
// sender) with FullName as display name. If the message has Resent-
// headers, it is being resent and the added headers are Resent-From:,
// Resent-Date: and Resent-Message-ID: instead, as with Postfix.
//
// With ExtractRecipients, recipients are taken from To:, Cc: and Bcc: (or
// only from Resent-To:, Resent-Cc: and Resent-Bcc:, if there are Resent-
// headers), added to ArgRecipients, and Bcc: and Resent-Bcc: are removed.
// Existing headers are kept as written, except that bare local names in
// address fields (From:, To:, Cc:, Reply-To:, Sender: and their Resent-
// forms) get "@Domain", as Postfix does for local mail, since a smarthost
// may refuse "From: root"; the body is kept byte for byte. If the header
// block was not ended by an empty line, one is inserted before the body.
//
// With Masquerade set, the envelope sender becomes Masquerade (a null
// sender stays null: bounces and auto-replies must not get replies), and
// with RewriteFrom every From: (Resent-From: for a resent message),
// present or added, shows Masquerade with its display name kept; the
// address it showed before goes into an added Reply-To: if the message has
// none and is not being resent.
//
// A leading mbox "From " separator line is dropped, as Postfix's sendmail
// does; it is not a header and would otherwise turn the real header into
// body text.
//
// msg should come from ReadMessage; other input is canonicalized first.
// Errors are *ExitError: ExUsage when there are no recipients, ExNoUser
// for a bad command-line recipient, ExDataErr for a bad sender or an
// unparsable recipient header.
func Prepare(msg []byte, p Params) (*Prepared, error) {
	if !crlf.Canonical(msg) {
		msg = canonical(msg)
	}
	msg = stripFromLine(msg)
	if p.Now.IsZero() {
		p.Now = time.Now()
	}

	from, err := envelopeSender(p)
	if err != nil {
		return nil, err
	}
	// origFrom is what an added From: shows without masquerading.
	origFrom := from
	if p.Masquerade != "" && from != "" {
		from = p.Masquerade
	}

	h := parseHeader(msg)
	resent := false
	for _, f := range h.fields {
		if hasPrefixFold(f.name, "Resent-") {
			resent = true
			break
		}
	}

	rcpts := newRecipientSet()
	for _, arg := range p.ArgRecipients {
		addrs, err := parseAddressList(arg)
		if err != nil {
			return nil, exitf(ExNoUser, "bad recipient address %q: %v", arg, err)
		}
		for _, a := range addrs {
			a = address.Qualify(a, p.Domain)
			if err := address.Valid(a); err != nil {
				return nil, exitf(ExNoUser, "bad recipient address %q: %v", a, err)
			}
			rcpts.add(a)
		}
	}

	// Build the new header block: existing fields minus any removed Bcc,
	// then the added ones.
	var out bytes.Buffer
	out.Grow(len(msg) + 512)
	pos := 0
	has := map[string]bool{}
	prefix := ""
	if resent {
		prefix = "Resent-"
	}
	lower := strings.ToLower(prefix)
	rewrite := p.Masquerade != "" && p.RewriteFrom
	var replyTo string // for an added Reply-To: when masquerading
	for _, f := range h.fields {
		name := strings.ToLower(f.name)
		if rewrite && name == lower+"from" {
			mb, orig := masqueradeFrom(f.value(msg), p.Masquerade, p.Domain)
			if replyTo == "" {
				replyTo = orig
			}
			out.Write(msg[pos:f.start])
			out.WriteString(f.name + ": " + mb + "\r\n")
			pos = f.end
			has[name] = true
			continue
		}
		// Blind copies must not show the other recipients: with -t the
		// Bcc fields go, continuation lines and all.
		drop := p.ExtractRecipients && (name == "bcc" || name == "resent-bcc")
		if isAddressHeader(name) && !drop {
			raw := string(msg[f.colon+1 : f.end])
			if q := qualifyList(raw, p.Domain); q != raw {
				out.Write(msg[pos : f.colon+1])
				out.WriteString(q)
				pos = f.end
			}
		}
		if p.ExtractRecipients && isRecipientHeader(name, resent) {
			addrs, err := parseAddressList(f.value(msg))
			if err != nil {
				return nil, exitf(ExDataErr, "cannot parse %s: header: %v", f.name, err)
			}
			for _, a := range addrs {
				a = address.Qualify(a, p.Domain)
				// Postfix reports bad header addresses as a data error: the
				// message, not the command line, is at fault.
				if err := address.Valid(a); err != nil {
					return nil, exitf(ExDataErr, "bad address %q in %s: header: %v", a, f.name, err)
				}
				rcpts.add(a)
			}
		}
		if drop {
			out.Write(msg[pos:f.start])
			pos = f.end
			continue
		}
		has[name] = true
	}
	out.Write(msg[pos:h.end])

	if p.ExtractRecipients && len(rcpts.list) == 0 {
		return nil, exitf(ExUsage, "no recipients found in message headers")
	}
	if len(rcpts.list) == 0 {
		return nil, exitf(ExUsage, "no recipients specified (give addresses or use -t)")
	}

	if !has[lower+"from"] {
		addr := origFrom
		if addr == "" {
			// The null sender has no address to show; Postfix shows the
			// mailer daemon.
			addr = address.Qualify("MAILER-DAEMON", p.Domain)
		} else if rewrite {
			if !strings.EqualFold(addr, p.Masquerade) {
				replyTo = formatMailbox(p.FullName, addr)
			}
			addr = p.Masquerade
		}
		out.WriteString(prefix + "From: " + formatMailbox(p.FullName, addr) + "\r\n")
	}
	if !has[lower+"date"] {
		out.WriteString(prefix + "Date: " + p.Now.Format(time.RFC1123Z) + "\r\n")
	}
	if !has[lower+"message-id"] {
		out.WriteString(prefix + "Message-ID: " + messageID(p) + "\r\n")
	}
	if !has["to"] && !has["cc"] && !has["bcc"] &&
		!has["resent-to"] && !has["resent-cc"] && !has["resent-bcc"] {
		// Keeps the message valid (RFC 5322 wants a destination field in
		// practice) without disclosing blind recipients.
		out.WriteString("To: undisclosed-recipients:;\r\n")
	}
	if replyTo != "" && !resent && !has["reply-to"] {
		out.WriteString("Reply-To: " + replyTo + "\r\n")
	}
	headerLen := out.Len()
	if !h.blank && h.end < len(msg) {
		// The body began without the empty line that ends the header (or
		// there was no header at all); separate it from what was added.
		out.WriteString("\r\n")
	}
	out.Write(msg[h.end:])

	pr := &Prepared{Message: out.Bytes(), From: from, Recipients: rcpts.list}
	pr.EightBit = !isASCII(pr.Message)
	pr.UTF8 = !isASCII(pr.Message[:headerLen]) || !isASCII([]byte(from))
	for _, r := range pr.Recipients {
		pr.UTF8 = pr.UTF8 || !isASCII([]byte(r))
	}
	return pr, nil
}

// isAddressHeader reports whether the lower-case field name holds
// addresses that bare local names in must be qualified.
func isAddressHeader(name string) bool {
	switch strings.TrimPrefix(name, "resent-") {
	case "from", "sender", "reply-to", "to", "cc", "bcc":
		return true
	}
	return false
}

// envelopeSender chooses and checks the envelope sender.
func envelopeSender(p Params) (string, error) {
	if p.SenderSet {
		s := address.Qualify(p.Sender, p.Domain)
		if s == "" {
			return "", nil // null sender
		}
		if err := address.Valid(s); err != nil {
			return "", exitf(ExDataErr, "bad sender address %q: %v", p.Sender, err)
		}
		return s, nil
	}
	if p.LoginName == "" {
		return "", exitf(ExSoftware, "cannot determine the sender: no login name")
	}
	s := address.Qualify(p.LoginName, p.Domain)
	if err := address.Valid(s); err != nil {
		return "", exitf(ExDataErr, "bad sender address %q: %v", s, err)
	}
	return s, nil
}

// isRecipientHeader reports whether a header named name (lower case) is a
// source of -t recipients. For a resent message only the Resent- fields
// count: the original To: was handled when the message was first sent.
func isRecipientHeader(name string, resent bool) bool {
	if resent {
		return name == "resent-to" || name == "resent-cc" || name == "resent-bcc"
	}
	return name == "to" || name == "cc" || name == "bcc"
}

func messageID(p Params) string {
	host := p.Hostname
	if host == "" {
		host = p.Domain
	}
	if host == "" {
		host = "localhost"
	}
	// rand.Text gives 26 base32 characters (128 bits): unique without
	// revealing anything about the host or process.
	return "<" + p.Now.UTC().Format("20060102150405") + "." + rand.Text() + "@" + host + ">"
}

// field is one header field in a message.
type field struct {
	name       string // as written, without the colon or white space before it
	start, end int    // the field with continuation lines and final CRLF
	colon      int    // offset of the colon
}

// value returns the field body, unfolded.
func (f field) value(msg []byte) string {
	return strings.ReplaceAll(string(msg[f.colon+1:f.end]), "\r\n", "")
}

// header describes the header block of a message.
type header struct {
	fields []field
	end    int  // offset just past the last field
	blank  bool // msg[end:] starts with the empty line that ends the header
}

// parseHeader finds the header fields at the start of canonical msg. The
// header block ends at the first empty line or at the first line that is
// neither a field nor a continuation; so a message that does not start
// with a field, like "hello", has no header at all.
func parseHeader(msg []byte) header {
	var h header
	for pos := 0; pos < len(msg); {
		eol := bytes.Index(msg[pos:], []byte("\r\n"))
		next := len(msg)
		if eol >= 0 {
			next = pos + eol + 2
		} else {
			eol = len(msg) - pos
		}
		line := msg[pos : pos+eol]
		switch {
		case len(line) == 0:
			h.end, h.blank = pos, true
			return h
		case line[0] == ' ' || line[0] == '\t':
			if len(h.fields) == 0 {
				h.end = pos
				return h
			}
			h.fields[len(h.fields)-1].end = next
		default:
			name, colon, ok := fieldName(line)
			if !ok {
				h.end = pos
				return h
			}
			h.fields = append(h.fields, field{name: name, start: pos, end: next, colon: pos + colon})
		}
		pos = next
	}
	h.end = len(msg)
	return h
}

// fieldName parses the start of a header field: a name of printable ASCII
// other than ':', optional white space (obsolete syntax that Postfix also
// accepts), and a colon.
func fieldName(line []byte) (name string, colon int, ok bool) {
	i := 0
	for i < len(line) && line[i] > ' ' && line[i] < 0x7f && line[i] != ':' {
		i++
	}
	if i == 0 {
		return "", 0, false
	}
	j := i
	for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
		j++
	}
	if j == len(line) || line[j] != ':' {
		return "", 0, false
	}
	return string(line[:i]), j, true
}

// stripFromLine removes leading mbox "From " separator lines (also
// ">From "), which some programs feed to sendmail. Postfix drops any first
// line starting with "From "; this also wants the date that a separator
// carries ("From user Mon Jan  2 15:04:05 2006"), so that a headerless
// message whose text starts with "From the server: ..." keeps that line.
func stripFromLine(msg []byte) []byte {
	for {
		eol := bytes.Index(msg, []byte("\r\n"))
		if eol < 0 {
			eol = len(msg)
		}
		line := bytes.TrimLeft(msg[:eol], ">")
		if !isFromLine(line) {
			return msg
		}
		msg = msg[min(eol+2, len(msg)):]
	}
}

func isFromLine(line []byte) bool {
	rest, ok := bytes.CutPrefix(line, []byte("From "))
	if !ok {
		return false
	}
	f := bytes.Fields(rest)
	if len(f) < 2 {
		return false
	}
	for _, w := range f[1:] {
		// An hh:mm or hh:mm:ss time of day.
		if len(w) >= 5 && isDigit(w[0]) && isDigit(w[1]) && w[2] == ':' && isDigit(w[3]) && isDigit(w[4]) {
			return true
		}
	}
	return false
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func canonical(msg []byte) []byte {
	var b bytes.Buffer
	w := crlf.NewWriter(&b)
	// Writes to a bytes.Buffer cannot fail.
	_, _ = w.Write(msg)
	_ = w.Close()
	return b.Bytes()
}

type recipientSet struct {
	list []string
	seen map[string]bool
}

func newRecipientSet() *recipientSet { return &recipientSet{seen: map[string]bool{}} }

// add appends a unless an address differing only in case is present.
func (s *recipientSet) add(a string) {
	k := strings.ToLower(a)
	if !s.seen[k] {
		s.seen[k] = true
		s.list = append(s.list, a)
	}
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
