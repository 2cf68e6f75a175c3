// Package address checks and completes envelope addresses.
package address

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// Qualify completes a bare local name with domain ("root" becomes
// "root@example.com") and strips angle brackets. Other addresses and the
// empty (null) address are returned as they are.
func Qualify(addr, domain string) string {
	addr = strings.TrimSpace(addr)
	if strings.HasPrefix(addr, "<") && strings.HasSuffix(addr, ">") {
		addr = addr[1 : len(addr)-1]
	}
	if addr == "" || strings.Contains(addr, "@") || domain == "" {
		return addr
	}
	return addr + "@" + domain
}

// Valid checks that addr is a usable mailbox (local@domain) for an SMTP
// envelope: RFC 5321 limits, no spaces or control characters, UTF-8 allowed
// for SMTPUTF8.
func Valid(addr string) error {
	if len(addr) > 254 {
		return errors.New("longer than 254 octets")
	}
	if !utf8.ValidString(addr) {
		return errors.New("not valid UTF-8")
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return errors.New("no domain")
	}
	local, domain := addr[:at], addr[at+1:]
	switch {
	case local == "":
		return errors.New("empty local part")
	case len(local) > 64:
		return errors.New("local part longer than 64 octets")
	case domain == "":
		return errors.New("empty domain")
	case strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") || strings.Contains(domain, ".."):
		return errors.New("malformed domain")
	}
	quoted := strings.HasPrefix(local, `"`) && strings.HasSuffix(local, `"`) && len(local) >= 2
	for _, r := range addr {
		if r < 0x20 || r == 0x7f {
			return errors.New("control character")
		}
		if !quoted && (r == ' ' || r == '<' || r == '>' || r == ',' || r == ';') {
			return errors.New("invalid character " + string(r))
		}
	}
	if !quoted && (strings.HasPrefix(local, ".") || strings.HasSuffix(local, ".") || strings.Contains(local, "..")) {
		return errors.New("malformed local part")
	}
	if strings.ContainsAny(domain, " \"\\@") {
		return errors.New("malformed domain")
	}
	return nil
}
