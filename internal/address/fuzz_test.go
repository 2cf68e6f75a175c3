package address

import (
	"strings"
	"testing"
)

// FuzzAddress checks the invariants the envelope relies on for any string:
// Qualify is idempotent and leaves an address with a domain alone, a valid
// address cannot carry a line break or another SMTP command, and alias
// expansion always yields somewhere to deliver.
func FuzzAddress(f *testing.F) {
	for _, a := range []string{
		"root", "<root>", " bob@example.net ", "<>", `"a@b"`, `"john doe"@example.com`,
		"a@[IPv6:2001:db8::1]", "jörg@bücher.example", "-oQ/tmp@x", `""0`, "a\r\nRCPT TO:<x@y>@x.com",
	} {
		f.Add(a)
	}
	aliases := NewAliases(map[string]string{"root": "admin@example.net", "*": "catchall@example.net, b@x"}, "example.com")
	f.Fuzz(func(t *testing.T, a string) {
		const domain = "example.com"
		q := Qualify(a, domain)
		if qq := Qualify(q, domain); qq != q {
			t.Fatalf("Qualify(%q) = %q, then %q", a, q, qq)
		}
		if Valid(a) == nil {
			if q != a {
				t.Fatalf("valid %q qualified to %q", a, q)
			}
			if strings.ContainsAny(a, "\r\n\x00") || len(a) > maxAddressLen {
				t.Fatalf("valid %q could break an SMTP command", a)
			}
			local, dom, ok := splitAddress(a)
			if !ok || local == "" || dom == "" || local+"@"+dom != a {
				t.Fatalf("valid %q splits into %q, %q, %v", a, local, dom, ok)
			}
		}
		if got := aliases.Expand(a); len(got) == 0 {
			t.Fatalf("Expand(%q) is empty", a)
		}
	})
}
