package sendmail

import (
	"reflect"
	"testing"
)

func TestParseAddressList(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		bad  bool
	}{
		{in: "a@x", want: []string{"a@x"}},
		{in: "A <a@x>, b@y (Bee)", want: []string{"a@x", "b@y"}},
		{in: "undisclosed-recipients:;", want: []string{}},
		{in: "team: a@x, b@y;, c@z", want: []string{"a@x", "b@y", "c@z"}},
		{in: `"Doe, John" <j@x>`, want: []string{"j@x"}},
		{in: `"john doe"@x`, want: []string{`"john doe"@x`}},
		{in: "=?x-unknown?q?abc?= <a@b>", want: []string{"a@b"}},
		{in: "  ", want: nil},
		// Bare local parts, which net/mail refuses.
		{in: "root", want: []string{"root"}},
		{in: "root, a@x", want: []string{"root", "a@x"}},
		{in: "Cron Daemon <root>", want: []string{"root"}},
		{in: "root (Cron Daemon)", want: []string{"root"}},
		{in: "ops: root, admin;", want: []string{"root", "admin"}},
		{in: "<@relay:root>", want: []string{"root"}},
		{in: "John Smith", bad: true},
		{in: `"unterminated`, bad: true},
		{in: "a <b", bad: true},
	}
	for _, tt := range tests {
		got, err := parseAddressList(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("parseAddressList(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseAddressList(%q): %v", tt.in, err)
			continue
		}
		if len(got) != len(tt.want) || (len(got) > 0 && !reflect.DeepEqual(got, tt.want)) {
			t.Errorf("parseAddressList(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormatMailbox(t *testing.T) {
	tests := []struct{ name, want string }{
		{"", "root@x"},
		{"CronDaemon", "CronDaemon <root@x>"},
		{"Cron Daemon", "Cron Daemon <root@x>"},
		{"Doe, John", `"Doe, John" <root@x>`},
		{"J. R. \"Bob\" Dobbs", `"J. R. \"Bob\" Dobbs" <root@x>`},
		{"back\\slash", `"back\\slash" <root@x>`},
		{"José", "=?utf-8?q?Jos=C3=A9?= <root@x>"},
		{"Müller, Hans", "=?utf-8?b?TcO8bGxlciwgSGFucw==?= <root@x>"},
		// -F is user input: a CR LF must not start a new header.
		{"Evil\r\nBcc: victim@x", `"Evil Bcc: victim@x" <root@x>`},
		{"  spaced   out ", "spaced out <root@x>"},
	}
	for _, tt := range tests {
		if got := formatMailbox(tt.name, "root@x"); got != tt.want {
			t.Errorf("formatMailbox(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestQualifyList(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{" root", " root@example.com"},
		{" root (Cron Daemon)", " root@example.com (Cron Daemon)"},
		{` "(Cron Daemon)" <root>`, ` "(Cron Daemon)" <root@example.com>`},
		{" Cron Daemon <root>", " Cron Daemon <root@example.com>"},
		{" a@x.net, bob,\r\n\tcarol@y.org", " a@x.net, bob@example.com,\r\n\tcarol@y.org"},
		{" undisclosed-recipients:;", " undisclosed-recipients:;"},
		{" team: a, b@x;", " team: a@example.com, b@x;"},
		{` "john doe"@x.net`, ` "john doe"@x.net`},
		{" Alice Smith", " Alice Smith"}, // not an address: left alone
		{" <@relay:root@x.net>", " <@relay:root@x.net>"},
		{` "unterminated`, ` "unterminated`},
	} {
		if got := qualifyList(tt.in, "example.com"); got != tt.want {
			t.Errorf("qualifyList(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
