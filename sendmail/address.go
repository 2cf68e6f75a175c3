package sendmail

import (
	"github.com/outboxmta/outbox/internal/address"

	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"unicode/utf8"
)

// formatMailbox renders a From: header value. The display name is taken
// from -F, which is user input, so control characters (a CR LF would start
// a new header) are turned into spaces before it is quoted or encoded.
func formatMailbox(name, addr string) string {
	name = strings.Join(strings.FieldsFunc(name, func(r rune) bool {
		return r <= ' ' || r == 0x7f || r == utf8.RuneError
	}), " ")
	if name == "" {
		return addr
	}
	return displayName(name) + " <" + addr + ">"
}

// displayName returns name as an RFC 5322 phrase: unchanged if it is a
// sequence of atoms, a quoted string if it is other printable ASCII, and
// RFC 2047 encoded words otherwise, so that added headers stay ASCII and do
// not by themselves require SMTPUTF8.
func displayName(name string) string {
	atoms, ascii := true, true
	for _, r := range name {
		if r >= utf8.RuneSelf {
			ascii = false
		} else if r != ' ' && !address.IsAtext(r) {
			atoms = false
		}
	}
	switch {
	case !ascii:
		// RFC 2047 section 5(3) keeps specials out of encoded words in a
		// phrase; Q encoding would leave some of them literal.
		if strings.ContainsAny(name, "\"#$%&'(),.:;<>@[]^`{|}~") {
			return mime.BEncoding.Encode("utf-8", name)
		}
		return mime.QEncoding.Encode("utf-8", name)
	case atoms:
		return name
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range name {
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

// parseAddressList returns the addr-specs named in an address-list header
// value or command-line argument, in order; groups contribute their
// members and an empty group ("undisclosed-recipients:;") nothing.
//
// net/mail is tried first. It insists on a domain, but "To: root" is what
// cron jobs and scripts write and Postfix accepts it, so when net/mail
// fails a tolerant parser that allows bare local parts takes over.
func parseAddressList(v string) ([]string, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	p := mail.AddressParser{WordDecoder: &mime.WordDecoder{
		// Display names are thrown away, so an unknown charset in one must
		// not make the whole header unparsable.
		CharsetReader: func(_ string, in io.Reader) (io.Reader, error) { return in, nil },
	}}
	list, err := p.ParseList(v)
	if err == nil {
		addrs := make([]string, 0, len(list))
		for _, a := range list {
			addrs = append(addrs, addrSpec(a.Address))
		}
		return addrs, nil
	}
	addrs, lerr := parseAddressListLenient(v)
	if lerr != nil {
		return nil, err // net/mail's message is the more informative one
	}
	return addrs, nil
}

// addrSpec restores the quoting that net/mail removes from a local part
// such as "john doe", so the result is usable in an SMTP command.
func addrSpec(a string) string {
	s := (&mail.Address{Address: a}).String()
	return strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
}

// token is a lexical unit of an address list. kind is one of
// '"' (quoted string), '(' (comment), '[' (domain literal), '<' (angle
// address), ',', ':', ';', ' ' (white space) or 'a' (any other run).
type token struct {
	kind byte
	text string
}

// tokenize splits s into tokens, keeping delimiters in text so that the
// pieces concatenate back to s.
func tokenize(s string) ([]token, error) {
	var toks []token
	for i := 0; i < len(s); {
		start := i
		kind := s[i]
		switch kind {
		case '"':
			end := address.ClosingQuote(s[i:])
			if end < 0 {
				return nil, errors.New("unterminated quoted string")
			}
			i += end + 1
		case '(':
			depth := 0
		comment:
			for ; i < len(s); i++ {
				switch s[i] {
				case '\\':
					i++
				case '(':
					depth++
				case ')':
					depth--
					if depth == 0 {
						break comment
					}
				}
			}
			if i >= len(s) {
				return nil, errors.New("unterminated comment")
			}
			i++
		case '[', '<':
			closer := byte(']')
			if kind == '<' {
				closer = '>'
			}
			for i++; i < len(s) && s[i] != closer; i++ {
				if s[i] == '"' && kind == '<' {
					end := address.ClosingQuote(s[i:])
					if end < 0 {
						return nil, errors.New("unterminated quoted string")
					}
					i += end
				}
			}
			if i >= len(s) {
				return nil, fmt.Errorf("missing %q", closer)
			}
			i++
		case ',', ':', ';':
			i++
		case ' ', '\t', '\r', '\n':
			kind = ' '
			for i < len(s) && strings.IndexByte(" \t\r\n", s[i]) >= 0 {
				i++
			}
		default:
			kind = 'a'
			for i < len(s) && strings.IndexByte("\"([<,:; \t\r\n", s[i]) < 0 {
				i++
			}
		}
		toks = append(toks, token{kind, s[start:i]})
	}
	return toks, nil
}

// parseAddressListLenient is the fallback parser of parseAddressList.
func parseAddressListLenient(v string) ([]string, error) {
	toks, err := tokenize(v)
	if err != nil {
		return nil, err
	}
	var (
		addrs   []string
		words   []string // non-space tokens of the current element
		spaced  bool     // white space separates two of words
		pending bool     // white space seen since the last word
		angle   *string
		inGroup bool
	)
	finish := func() error {
		var a string
		switch {
		case angle != nil:
			a = strings.TrimSpace(*angle)
			// Source routes (<@relay:user@host>) are obsolete; RFC 5321
			// says to ignore them.
			if strings.HasPrefix(a, "@") {
				if c := strings.IndexByte(a, ':'); c >= 0 {
					a = a[c+1:]
				}
			}
		case spaced:
			return fmt.Errorf("no address in %q", strings.Join(words, " "))
		default:
			a = strings.Join(words, "")
		}
		if a != "" {
			addrs = append(addrs, a)
		}
		words, spaced, pending, angle = nil, false, false, nil
		return nil
	}
	for _, t := range toks {
		switch t.kind {
		case ' ', '(':
			pending = len(words) > 0
		case '<':
			if angle != nil {
				return nil, errors.New("more than one angle address")
			}
			s := t.text[1 : len(t.text)-1]
			angle = &s
		case ',':
			if err := finish(); err != nil {
				return nil, err
			}
		case ':':
			if inGroup || angle != nil {
				return nil, errors.New("unexpected ':'")
			}
			// What came before was the group's display name.
			words, spaced, pending, inGroup = nil, false, false, true
		case ';':
			if !inGroup {
				return nil, errors.New("unexpected ';'")
			}
			if err := finish(); err != nil {
				return nil, err
			}
			inGroup = false
		default:
			if pending {
				spaced = true
			}
			pending = false
			words = append(words, t.text)
		}
	}
	if err := finish(); err != nil {
		return nil, err
	}
	return addrs, nil
}

// splitList splits a command-line recipient argument at the commas that
// separate addresses ("a@x, b@y"), leaving commas inside quotes, comments,
// angle brackets and groups alone. Pieces are trimmed; empty ones dropped.
func splitList(s string) []string {
	toks, err := tokenize(s)
	if err != nil {
		// Let the address check report it later, with the whole argument.
		if s = strings.TrimSpace(s); s == "" {
			return nil
		}
		return []string{s}
	}
	var (
		parts   []string
		cur     strings.Builder
		inGroup bool
	)
	flush := func() {
		if p := strings.TrimSpace(cur.String()); p != "" {
			parts = append(parts, p)
		}
		cur.Reset()
	}
	for _, t := range toks {
		switch t.kind {
		case ':':
			inGroup = true
		case ';':
			inGroup = false
		case ',':
			if !inGroup {
				flush()
				continue
			}
		}
		cur.WriteString(t.text)
	}
	flush()
	return parts
}

// qualifyList appends @domain to the bare local parts ("root", "<root>") in
// an address-list header value, as Postfix does for locally submitted mail:
// a smarthost may refuse a From: or To: without a domain. Everything else,
// display names, comments and folding included, is kept byte for byte. A
// value that cannot be read is returned unchanged.
func qualifyList(v, domain string) string {
	toks, err := tokenize(v)
	if err != nil || domain == "" {
		return v
	}
	var b strings.Builder
	var elem []token
	flush := func(isAddress bool) {
		if isAddress {
			qualifyElement(elem, domain)
		}
		for _, t := range elem {
			b.WriteString(t.text)
		}
		elem = elem[:0]
	}
	for _, t := range toks {
		switch t.kind {
		case ',', ';':
			flush(true)
			b.WriteString(t.text)
		case ':':
			flush(false) // a group's display name
			b.WriteString(t.text)
		default:
			elem = append(elem, t)
		}
	}
	flush(true)
	return b.String()
}

// qualifyElement qualifies the address of one mailbox of a list: the one
// in angle brackets, or else a lone word.
func qualifyElement(elem []token, domain string) {
	word := -1
	for i, t := range elem {
		if t.kind == '<' {
			if inner := strings.TrimSpace(t.text[1 : len(t.text)-1]); inner != "" && !strings.HasPrefix(inner, "@") {
				elem[i].text = "<" + address.Qualify(inner, domain) + ">"
			}
			return
		}
	}
	for i, t := range elem {
		if t.kind == 'a' || t.kind == '"' {
			if word >= 0 {
				return // several words and no angle address: not a bare name
			}
			word = i
		}
	}
	if word >= 0 && elem[word].kind == 'a' {
		elem[word].text = address.Qualify(elem[word].text, domain)
	}
}
