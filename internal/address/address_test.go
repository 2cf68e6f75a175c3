package address

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for addr, ok := range map[string]bool{
		"a@example.com":              true,
		"first.last+tag@example.com": true,
		`"john doe"@example.com`:     true,
		"jörg@bücher.example":        true,
		"a@[192.0.2.1]":              true,
		"":                           false,
		"root":                       false,
		"b@@example.net":             false,
		"b@.net":                     false,
		"b@example..net":             false,
		".a@example.com":             false,
		"a..b@example.com":           false,
		"a b@example.com":            false,
		"a@exa mple.com":             false,
		"a\r\nRCPT TO:<x@y>@x.com":   false,
		"-oQ/tmp@example.com":        false,
		"a@-example.com":             false,
		`""0@example.com`:            false,
		`"a"b@example.com`:           false,
		"㈀@\u3000":                   false, // ideographic space as the domain
		"a@exa\u200bmple.com":        false, // zero-width space
		"a\u00a0b@example.com":       false, // no-break space
		"\"a\u0085b\"@example.com":   false, // C1 control in a quoted string
		"\"a\u200bb\"@example.com":   false, // zero-width space in a quoted string
		"\"a\u00a0b\"@example.com":   true,  // a quoted string may hold any space
		"a@example.com\u202e":        false, // right-to-left override
		"user@\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.example": true, // ZWNJ, Persian
		"\U0001F468\u200d\U0001F4BB@example.com":                        true, // ZWJ emoji sequence
	} {
		if err := Valid(addr); (err == nil) != ok {
			t.Errorf("Valid(%q) = %v, want ok=%v", addr, err, ok)
		}
	}
}

func TestQualify(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"root", "root@example.com"},
		{"<root>", "root@example.com"},
		{" bob@example.net ", "bob@example.net"},
		{"<>", ""},
		{"<<@>>", "@"},
		{"<< root >>", "root@example.com"},
		{"", ""},
		{`"a@b"`, `"a@b"@example.com`},
		{`""0@example.org`, `""0@example.org`}, // malformed, but has a domain
	} {
		if got := Qualify(tt.in, "example.com"); got != tt.want {
			t.Errorf("Qualify(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestAliases(t *testing.T) {
	a := NewAliases(map[string]string{
		"root":                  "admin@example.com",
		"postmaster":            "ops@example.com, admin@example.com",
		"webmaster@example.org": "web@example.net",
	}, "example.com", "app1.example.com")
	for _, tt := range []struct {
		in   string
		want []string
	}{
		{"root@example.com", []string{"admin@example.com"}},
		{"ROOT@App1.Example.com", []string{"admin@example.com"}},
		{"root", []string{"admin@example.com"}},
		{"root@elsewhere.net", []string{"root@elsewhere.net"}},
		{"postmaster@example.com", []string{"ops@example.com", "admin@example.com"}},
		{"webmaster@example.org", []string{"web@example.net"}},
		{"admin@example.com", []string{"admin@example.com"}},
	} {
		got := a.Expand(tt.in)
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("Expand(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestQualifyCases(t *testing.T) {
	tests := []struct{ in, want string }{
		{"root", "root@example.org"},
		{"user@host", "user@host"},
		{"<root>", "root@example.org"},
		{" <user@host> ", "user@host"},
		{"", ""},
		{"<>", ""},
		{`"a@b"`, `"a@b"@example.org`},
		{`"a@b"@host`, `"a@b"@host`},
		{"user@", "user@"}, // has a domain part, if an empty one: ValidAddress decides
	}
	for _, tt := range tests {
		if got := Qualify(tt.in, "example.org"); got != tt.want {
			t.Errorf("Qualify(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := Qualify("root", ""); got != "root" {
		t.Errorf("Qualify with no domain = %q, want it unchanged", got)
	}
}

func TestValidCases(t *testing.T) {
	tests := []struct {
		addr   string
		reason string // "" if valid, else a substring of the error
	}{
		{"user@example.com", ""},
		{"first.last+tag@sub.example.com", ""},
		{"o'brien@example.com", ""},
		{`"john doe"@example.com`, ""},
		{`"a@b"@example.com`, ""},
		{"user@[192.0.2.1]", ""},
		{"user@[IPv6:2001:db8::1]", ""},
		{"jösé@exämple.com", ""},
		{"用户@例子.广告", ""},
		{"", "empty address"},
		{"@example.com", "empty local part"},
		{"root", "missing @domain"},
		{"user@", "empty domain"},
		{"a b@example.com", "white space"},
		{"a@b@example.com", "more than one '@'"},
		{"user@exa mple.com", "white space"},
		{"user\r\nRCPT TO:<x@y>@example.com", "control character"},
		{"us\x00er@example.com", "control character"},
		{"user@example.com\n", "control character"},
		{".user@example.com", "dot"},
		{"user.@example.com", "dot"},
		{"us..er@example.com", "consecutive dots"},
		{"user@example..com", "empty label"},
		{"user@.example.com", "empty label"},
		{"user@-example.com", "'-'"},
		{"-oQ/tmp/x@example.com", "begins with '-'"},
		{"user@ex_ample.com", "invalid character"},
		{"us(er@example.com", "invalid character"},
		{"user@[1.2.3.4", "address literal"},
		{strings.Repeat("a", 250) + "@b.cd", "longer than 254"},
		{"\xff@example.com", "UTF-8"},
	}
	for _, tt := range tests {
		err := Valid(tt.addr)
		switch {
		case tt.reason == "" && err != nil:
			t.Errorf("Valid(%q) = %v, want nil", tt.addr, err)
		case tt.reason != "" && err == nil:
			t.Errorf("Valid(%q) = nil, want error about %q", tt.addr, tt.reason)
		case tt.reason != "" && !strings.Contains(err.Error(), tt.reason):
			t.Errorf("Valid(%q) = %v, want error about %q", tt.addr, err, tt.reason)
		}
	}
}

func TestAliasesCatchAll(t *testing.T) {
	a := NewAliases(map[string]string{"*": "ops@example.net", "root": "admin@example.net"}, "example.com")
	for in, want := range map[string]string{
		"www-data":              "ops@example.net",
		"cron@example.com":      "ops@example.net",
		"root@example.com":      "admin@example.net",
		"someone@elsewhere.org": "someone@elsewhere.org",
	} {
		if got := a.Expand(in); len(got) != 1 || got[0] != want {
			t.Errorf("Expand(%q) = %v, want %s", in, got, want)
		}
	}
}
