// Package address checks and completes envelope addresses, for every way
// mail enters Outbox: the listener, the sendmail command and the queue.
package address

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxAddressLen is the longest forward-path RFC 5321 allows (256 octets
// including the angle brackets).
const maxAddressLen = 254

// Qualify turns addr into an address the smarthost will accept: surrounding
// white space and angle brackets are removed and a bare local
// part ("root") gets "@domain" appended, as Postfix does with myorigin.
// An address that already has a domain is returned unchanged, and "" (or
// "<>", the null sender) stays "".
func Qualify(addr, domain string) string {
	a := strings.TrimSpace(addr)
	// Every surrounding pair goes: "<<root>>" is malformed, but taking
	// off only one would leave a different answer for the result.
	for len(a) >= 2 && a[0] == '<' && a[len(a)-1] == '>' {
		a = strings.TrimSpace(a[1 : len(a)-1])
	}
	if a == "" || domain == "" {
		return a
	}
	if _, _, hasAt := splitAddress(a); hasAt {
		return a
	}
	return a + "@" + domain
}

// splitAddress splits a at its last '@' outside a quoted local part.
// hasAt is false when there is no such '@', i.e. a is a bare local part.
func splitAddress(a string) (local, domain string, hasAt bool) {
	// A quoted local part may itself contain '@'. Normally the '@' follows the closing quote. If something else does
	// (`"a"b@x`), or the quote is never closed, the address is malformed
	// (Valid says so), but the last '@' after the quoted part still ends
	// the local part: otherwise Qualify would append a second domain.
	quoted := 0
	if strings.HasPrefix(a, `"`) {
		quoted = max(ClosingQuote(a), 0)
	}
	at := strings.LastIndexByte(a[quoted:], '@')
	if at < 0 {
		return a, "", false
	}
	at += quoted
	return a[:at], a[at+1:], true
}

// ClosingQuote returns the index of the '"' that closes the quoted string
// starting at s[0], or -1.
func ClosingQuote(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// Valid reports why a is not a mailbox that can be put in an SMTP
// MAIL FROM or RCPT TO command (RFC 5321 section 4.1.2, with RFC 6531 UTF-8
// allowed), or nil if it is. The checks are about keeping the envelope
// well-formed, not about whether the mailbox exists.
func Valid(a string) error {
	if a == "" {
		return errors.New("empty address")
	}
	if len(a) > maxAddressLen {
		return fmt.Errorf("longer than %d bytes", maxAddressLen)
	}
	if !utf8.ValidString(a) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range a {
		// C0 (CR and LF would let an address inject SMTP commands), DEL
		// and the C1 controls, which mean nothing in an address either.
		if unicode.IsControl(r) {
			return errors.New("contains a control character")
		}
		if invisible(r) {
			return fmt.Errorf("contains the invisible character %U", r)
		}
	}
	local, domain, hasAt := splitAddress(a)
	if !hasAt {
		return errors.New("missing @domain")
	}
	if local == "" {
		return errors.New("empty local part")
	}
	// Postfix refuses these by default (allow_min_user = no): an address
	// that looks like an option is a classic way to smuggle flags into a
	// delivery command.
	if local[0] == '-' {
		return errors.New("local part begins with '-'")
	}
	if err := validLocal(local); err != nil {
		return err
	}
	return validDomain(domain)
}

func validLocal(local string) error {
	if local[0] == '"' {
		// A quoted string: control characters are already refused, so
		// whatever is inside (spaces, '@', UTF-8) is legitimate, but
		// nothing may follow the closing quote.
		if ClosingQuote(local) != len(local)-1 {
			return errors.New("text after the quoted local part")
		}
		return nil
	}
	if strings.HasPrefix(local, ".") || strings.HasSuffix(local, ".") {
		return errors.New("local part begins or ends with a dot")
	}
	if strings.Contains(local, "..") {
		return errors.New("local part contains consecutive dots")
	}
	for _, r := range local {
		switch {
		case r == '@':
			return errors.New("more than one '@'")
		case unicode.IsSpace(r):
			return errors.New("contains white space")
		case r != '.' && !IsAtext(r):
			return fmt.Errorf("invalid character %q in local part", r)
		}
	}
	return nil
}

func validDomain(domain string) error {
	if domain == "" {
		return errors.New("empty domain")
	}
	if domain[0] == '[' {
		// Address literal such as [192.0.2.1] or [IPv6:2001:db8::1].
		if len(domain) < 3 || domain[len(domain)-1] != ']' {
			return errors.New("malformed address literal")
		}
		for _, c := range []byte(domain[1 : len(domain)-1]) {
			if c <= ' ' || c >= 0x7f || c == '[' || c == ']' || c == '\\' {
				return errors.New("malformed address literal")
			}
		}
		return nil
	}
	for label := range strings.SplitSeq(domain, ".") {
		if label == "" {
			return errors.New("domain has an empty label")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("domain label %q begins or ends with '-'", label)
		}
		for _, r := range label {
			// Letters, digits and hyphens (RFC 5321 sub-domain), plus UTF-8
			// U-labels for internationalized domains, but not Unicode
			// white space (U+3000), which no IDNA mapping accepts.
			switch {
			case unicode.IsSpace(r):
				return errors.New("contains white space")
			case !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
				r == '-' || r >= utf8.RuneSelf):
				return fmt.Errorf("invalid character %q in domain", r)
			}
		}
	}
	return nil
}

// invisible reports whether r is a format or other non-printing character
// (U+200B zero width space, U+202E right-to-left override, U+FEFF) that
// would make a log line or a bounce show a different address from the one
// used; the zero width joiner and non-joiner are spelling in some scripts
// (IDNA allows them in context) and emoji, so they stay.
func invisible(r rune) bool {
	return r >= utf8.RuneSelf && !unicode.IsGraphic(r) && r != '\u200c' && r != '\u200d'
}

// IsAtext reports whether r may appear in an RFC 5322 atom (RFC 6532 adds
// all non-ASCII characters).
func IsAtext(r rune) bool {
	switch {
	case r >= utf8.RuneSelf:
		return true
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", r)
}
