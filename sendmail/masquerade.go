package sendmail

import (
	"io"
	"mime"
	"net/mail"
	"strings"

	"github.com/outboxmta/outbox/internal/address"
)

// masqueradeFrom rewrites a From: header value to show masq, keeping the
// display name. It also returns the mailbox the value showed before
// (display name and address qualified with domain) for a Reply-To:, or ""
// if it showed no usable address or masq already.
func masqueradeFrom(value, masq, domain string) (mailbox, orig string) {
	name, addr := splitMailbox(value)
	mailbox = formatMailbox(name, masq)
	addr = address.Qualify(addr, domain)
	if addr == "" || strings.EqualFold(addr, masq) || address.Valid(addr) != nil {
		return mailbox, ""
	}
	return mailbox, formatMailbox(name, addr)
}

// splitMailbox returns the display name and address of the first mailbox
// in a From: header value. Like parseAddressList it falls back to a
// lenient reading for what net/mail refuses ("Cron Daemon <root>").
func splitMailbox(v string) (name, addr string) {
	p := mail.AddressParser{WordDecoder: &mime.WordDecoder{
		CharsetReader: func(_ string, in io.Reader) (io.Reader, error) { return in, nil },
	}}
	if list, err := p.ParseList(v); err == nil && len(list) > 0 {
		return list[0].Name, addrSpec(list[0].Address)
	}
	toks, err := tokenize(v)
	if err != nil {
		return "", ""
	}
	var words []string
	for _, t := range toks {
		switch t.kind {
		case 'a':
			words = append(words, t.text)
		case '"':
			words = append(words, unquote(t.text))
		case '<':
			return strings.Join(words, " "), strings.TrimSpace(t.text[1 : len(t.text)-1])
		case ',', ':':
			// A second mailbox or a group: not a name-addr after all.
			words = nil
		}
	}
	if addrs, err := parseAddressList(v); err == nil && len(addrs) > 0 {
		return "", addrs[0]
	}
	return "", ""
}

// unquote removes the quotes and backslash escapes of a quoted string.
func unquote(q string) string {
	q = strings.TrimSuffix(strings.TrimPrefix(q, `"`), `"`)
	var b strings.Builder
	for i := 0; i < len(q); i++ {
		if q[i] == '\\' && i+1 < len(q) {
			i++
		}
		b.WriteByte(q[i])
	}
	return b.String()
}
