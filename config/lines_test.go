package config

import (
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func TestKeyLines(t *testing.T) {
	src := strings.Join([]string{
		`# [not] = "a table"`,       // 1
		`hostname = "h" # [x]`,      // 2
		`spool.dir = "/s"`,          // 3
		`motd = """`,                // 4
		`[fake]`,                    // 5
		`fake = 1 """`,              // 6
		`[[upstream]]`,              // 7
		`host = 'a' # x = 1`,        // 8
		`password_command = [`,      // 9
		`  "cmd", # comment ]`,      // 10
		`  "arg=1",`,                // 11
		`]`,                         // 12
		`[[ upstream ]]`,            // 13
		`"port" = 25`,               // 14
		`[aliases]`,                 // 15
		`"postmaster" = 'x'`,        // 16
		`"a b" = "y"`,               // 17
		`'lit.key' = "z"`,           // 18
		"crlf = 1\r",                // 19
		`s = '''`,                   // 20
		`a = b'''`,                  // 21
		`e = "\"[x]\""`,             // 22
		`[[upstream]]`,              // 23
		`host = "c"`,                // 24
		`inline = { a = 1, b = [1,`, // 25: newline inside [] is fine
		`2] }`,                      // 26
		`after = 1`,                 // 27
	}, "\n")
	var v map[string]any
	if _, err := toml.Decode(src, &v); err != nil {
		t.Fatalf("test input is not valid TOML: %v", err)
	}
	got := keyLines(src)
	want := map[string]int{
		"hostname":                        2,
		"spool":                           3,
		"spool.dir":                       3,
		"motd":                            4,
		"upstream":                        7,
		"upstream[0]":                     7,
		"upstream[0].host":                8,
		"upstream[0].password_command":    9,
		"upstream[0].password_command[0]": 10,
		"upstream[0].password_command[1]": 11,
		"upstream[1]":                     13,
		"upstream[1].port":                14,
		"aliases":                         15,
		"aliases.postmaster":              16,
		`aliases."a b"`:                   17,
		`aliases."lit.key"`:               18,
		"aliases.crlf":                    19,
		"aliases.s":                       20,
		"aliases.e":                       22,
		"upstream[2]":                     23,
		"upstream[2].host":                24,
		"upstream[2].inline":              25,
		"upstream[2].after":               27,
	}
	for k, line := range want {
		if got[k] != line {
			t.Errorf("line of %s = %d, want %d", k, got[k], line)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected key %s at line %d", k, got[k])
		}
	}
}

func TestLineOf(t *testing.T) {
	lines := map[string]int{"upstream": 3, "upstream[1]": 9, "upstream[1].port": 11, "aliases": 20}
	tests := []struct {
		path string
		want int
	}{
		{"upstream[1].port", 11},
		{"upstream[1].tls", 9},
		{"upstream[0].tls", 3},
		{"upstream[1].password_command[2]", 9},
		{`aliases."a.b"`, 20},
		{"spool.dir", 0},
		{"", 0},
	}
	for _, tt := range tests {
		if got := lineOf(lines, tt.path); got != tt.want {
			t.Errorf("lineOf(%q) = %d, want %d", tt.path, got, tt.want)
		}
	}
}
