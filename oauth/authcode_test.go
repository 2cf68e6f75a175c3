package oauth

import "testing"

func TestParseRedirect(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want redirect
		ok   bool
	}{
		{"http://127.0.0.1:8765/?state=S&code=4/0Ab_c-d&scope=https://mail.google.com/", redirect{code: "4/0Ab_c-d", state: "S"}, true},
		{"  http://localhost:8765/?code=4%2F0Abc&state=S#  ", redirect{code: "4/0Abc", state: "S"}, true},
		{"state=S&code=xyz", redirect{code: "xyz", state: "S"}, true},
		{"http://127.0.0.1:8765/?error=access_denied&state=S", redirect{err: "access_denied", state: "S"}, true},
		{"4/0AbCdEf-gh_ij", redirect{code: "4/0AbCdEf-gh_ij", bare: true}, true},
		{"http://127.0.0.1:8765/?state=S", redirect{}, false},
		{"two words", redirect{}, false},
		{"", redirect{}, false},
	} {
		got, ok := parseRedirect(tt.in)
		if ok != tt.ok || ok && got != tt.want {
			t.Errorf("parseRedirect(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
