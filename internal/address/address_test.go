package address

import "testing"

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
		{"", ""},
		{`"a@b"`, `"a@b"@example.com`},
	} {
		if got := Qualify(tt.in, "example.com"); got != tt.want {
			t.Errorf("Qualify(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
