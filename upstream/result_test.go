package upstream

import (
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

func TestEnhancedString(t *testing.T) {
	tests := []struct {
		in   smtp.EnhancedCode
		want string
	}{
		{smtp.EnhancedCode{5, 1, 1}, "5.1.1"},
		{smtp.EnhancedCode{4, 7, 10}, "4.7.10"},
		{smtp.NoEnhancedCode, ""},
		{smtp.EnhancedCode{}, ""},
	}
	for _, tt := range tests {
		if got := enhancedString(tt.in); got != tt.want {
			t.Errorf("enhancedString(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseReply(t *testing.T) {
	tests := []struct {
		code           int
		msg            string
		wantEnh, wantT string
	}{
		{250, "2.0.0 Ok: queued as 4XyZ", "2.0.0", "Ok: queued as 4XyZ"},
		{250, "Ok queued", "", "Ok queued"},
		{250, "5.0.0 mismatched class", "", "5.0.0 mismatched class"},
		{550, "5.1.1 line one\n5.1.1 line two", "5.1.1", "line one line two"},
		{250, "1.2 not enhanced", "", "1.2 not enhanced"},
	}
	for _, tt := range tests {
		r := parseReply(tt.code, tt.msg)
		if r.code != tt.code || r.enhanced != tt.wantEnh || r.text != tt.wantT {
			t.Errorf("parseReply(%d, %q) = %+v, want %q %q", tt.code, tt.msg, r, tt.wantEnh, tt.wantT)
		}
	}
}

func TestClean(t *testing.T) {
	if got := clean("a\r\nb\x00c\t\x1b[31m  d\xff"); got != "a b c [31m d\uFFFD" {
		t.Errorf("clean = %q", got)
	}
	if got := clean(strings.Repeat("x", 5000)); len(got) > maxText+3 {
		t.Errorf("clean kept %d bytes", len(got))
	}
}

func TestStatusString(t *testing.T) {
	for s, want := range map[Status]string{Delivered: "delivered", Deferred: "deferred", Failed: "failed", Status(9): "Status(9)"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(s), s.String(), want)
		}
	}
}

func TestErrorString(t *testing.T) {
	e := &Error{Op: "mail", Code: 550, Enhanced: "5.1.8", Text: "bad sender"}
	if got := e.Error(); got != "upstream mail: 550 5.1.8 bad sender" {
		t.Errorf("Error() = %q", got)
	}
	e = &Error{Op: "connect", Text: "connection refused"}
	if got := e.Error(); got != "upstream connect: connection refused" {
		t.Errorf("Error() = %q", got)
	}
}
