package config

import (
	"os"
	"strings"
	"testing"
)

func TestMasquerade(t *testing.T) {
	c := mustParse(t, upstream)
	if c.Masquerade.Sender != "" || !c.Masquerade.RewriteFrom {
		t.Errorf("defaults: %+v, want no sender and rewrite_from = true", c.Masquerade)
	}
	c = mustParse(t, upstream+"[masquerade]\nsender = \"noreply@example.com\"\nrewrite_from = false\n")
	if c.Masquerade.Sender != "noreply@example.com" || c.Masquerade.RewriteFrom {
		t.Errorf("set: %+v", c.Masquerade)
	}
	for _, tt := range []struct{ src, want string }{
		{`sender = "noreply"`, `:4: masquerade.sender: "noreply" is not a full mail address: missing @domain`},
		{`sender = "a b@example.com"`, `:4: masquerade.sender: "a b@example.com" is not a full mail address`},
		{`rewrite_from = "yes"`, `:4: masquerade.rewrite_from: expected true or false, got string "yes"`},
		{`from = "x@y"`, `unknown key "masquerade.from"`},
	} {
		_, err := parse(t, upstream+"[masquerade]\n"+tt.src+"\n")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %q", tt.src, err, tt.want)
		}
	}
}

// The commented [masquerade] lines of the example work when uncommented.
func TestExampleMasquerade(t *testing.T) {
	data, err := os.ReadFile("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	src := string(data)
	for line, repl := range map[string]string{
		"# [masquerade]": "[masquerade]",
		`# sender = "noreply@example.com"; rewrite_from = true`: "sender = \"noreply@example.com\"\nrewrite_from = true\n#",
	} {
		if !strings.Contains(src, line) {
			t.Fatalf("example no longer contains %q", line)
		}
		src = strings.Replace(src, line, repl, 1)
	}
	c, err := Parse("example", []byte(src))
	if err != nil {
		t.Fatalf("uncommented example:\n%v", err)
	}
	if c.Masquerade.Sender != "noreply@example.com" || !c.Masquerade.RewriteFrom {
		t.Errorf("uncommented example: %+v", c.Masquerade)
	}
}
