package crlf

import (
	"bytes"
	"testing"
)

func TestWriter(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"crlf kept", "a\r\nb\r\n", "a\r\nb\r\n"},
		{"bare lf", "a\nb\n", "a\r\nb\r\n"},
		{"bare cr", "a\rb\r", "a\r\nb\r\n"},
		{"no final newline", "a\r\nb", "a\r\nb\r\n"},
		{"smuggle lf dot lf", "x\n.\nMAIL FROM", "x\r\n.\r\nMAIL FROM\r\n"},
		{"smuggle cr dot cr", "x\r.\r\n", "x\r\n.\r\n"},
		{"cr cr lf", "x\r\r\n", "x\r\n\r\n"},
		{"nul kept", "a\x00b\r\n", "a\x00b\r\n"},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 2, 3, 1 << 20} {
			var out bytes.Buffer
			w := NewWriter(&out)
			in := []byte(tt.in)
			for len(in) > 0 {
				n := min(chunk, len(in))
				if _, err := w.Write(in[:n]); err != nil {
					t.Fatal(err)
				}
				in = in[n:]
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if got := out.String(); got != tt.want {
				t.Errorf("%s (chunk %d): got %q, want %q", tt.name, chunk, got, tt.want)
			}
			if w.Written() != int64(out.Len()) {
				t.Errorf("%s: Written() = %d, wrote %d", tt.name, w.Written(), out.Len())
			}
			if !Canonical(out.Bytes()) {
				t.Errorf("%s: output %q not canonical", tt.name, out.String())
			}
		}
	}
}

func TestCanonical(t *testing.T) {
	for in, want := range map[string]bool{
		"": true, "a\r\n": true, "a\n": false, "a\r": false, "\n": false, "a\r\r\n": false,
	} {
		if got := Canonical([]byte(in)); got != want {
			t.Errorf("Canonical(%q) = %v, want %v", in, got, want)
		}
	}
}
