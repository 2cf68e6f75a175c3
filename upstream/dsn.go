package upstream

import (
	"strings"

	"github.com/emersion/go-smtp"
)

// DSN parameters are checked here before go-smtp sees them: it refuses a
// malformed one with an error that is not a server reply, which would
// count as a broken connection. The listener already checked them on the
// way in, so a bad value means a damaged or hand-edited record; it is
// dropped with a warning rather than holding the message up.

// mailDSN returns the RET and ENVID parameters for MAIL.
func (s *session) mailDSN(m *Message) (smtp.DSNReturn, string) {
	ret := smtp.DSNReturn(strings.ToUpper(m.DSNRet))
	switch ret {
	case "", smtp.DSNReturnFull, smtp.DSNReturnHeaders:
	default:
		s.log.Warn("ignoring invalid DSN RET parameter", "ret", m.DSNRet)
		ret = ""
	}
	envid := m.EnvID
	if !isPrintableASCII(envid) {
		s.log.Warn("ignoring invalid DSN ENVID parameter")
		envid = ""
	}
	return ret, envid
}

// rcptDSN returns the RCPT options for recipient i of m, nil for none.
func (s *session) rcptDSN(m *Message, i int) *smtp.RcptOptions {
	if i >= len(m.DSN) {
		return nil
	}
	d := m.DSN[i]
	var o smtp.RcptOptions
	if d.Notify != "" {
		o.Notify = parseNotify(d.Notify)
		if o.Notify == nil {
			s.log.Warn("ignoring invalid DSN NOTIFY parameter", "to", m.Recipients[i], "notify", d.Notify)
		}
	}
	if d.Orcpt != "" {
		typ, addr, ok := strings.Cut(d.Orcpt, ";")
		switch t := smtp.DSNAddressType(strings.ToUpper(typ)); {
		case !ok || addr == "" || strings.ContainsAny(addr, "\r\n"):
			s.log.Warn("ignoring invalid DSN ORCPT parameter", "to", m.Recipients[i])
		case t == smtp.DSNAddressTypeRFC822 && isPrintableASCII(addr):
			o.OriginalRecipientType, o.OriginalRecipient = t, addr
		case t == smtp.DSNAddressTypeRFC822 || t == smtp.DSNAddressTypeUTF8:
			// An internationalized address: RFC 6533's utf-8 type,
			// which go-smtp encodes for servers with and without
			// SMTPUTF8.
			o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeUTF8, addr
		default:
			s.log.Warn("ignoring DSN ORCPT parameter of unknown address type", "to", m.Recipients[i], "type", typ)
		}
	}
	if o.Notify == nil && o.OriginalRecipient == "" {
		return nil
	}
	return &o
}

// parseNotify parses a NOTIFY value; nil if it is not valid (RFC 3461
// section 4.1: NEVER alone, or a set of SUCCESS, FAILURE and DELAY).
func parseNotify(v string) []smtp.DSNNotify {
	var out []smtp.DSNNotify
	seen := map[smtp.DSNNotify]bool{}
	for _, f := range strings.Split(strings.ToUpper(v), ",") {
		n := smtp.DSNNotify(strings.TrimSpace(f))
		switch n {
		case smtp.DSNNotifyNever, smtp.DSNNotifySuccess, smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed:
		default:
			return nil
		}
		if seen[n] {
			return nil
		}
		seen[n] = true
		out = append(out, n)
	}
	if seen[smtp.DSNNotifyNever] && len(out) > 1 {
		return nil
	}
	return out
}

// isPrintableASCII reports whether s is printable US-ASCII (space included),
// as xtext values must be before encoding.
func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
