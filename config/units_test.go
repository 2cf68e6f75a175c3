package config

import (
	"testing"
	"time"
)

func TestDurationUnmarshalText(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "30s", want: 30 * time.Second},
		{in: "15m", want: 15 * time.Minute},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "36h", want: 36 * time.Hour},
		{in: "5d", want: 5 * 24 * time.Hour},
		{in: "1d12h", want: 36 * time.Hour},
		{in: "1d30m15s", want: 24*time.Hour + 30*time.Minute + 15*time.Second},
		{in: "1.5h", want: 90 * time.Minute},
		{in: "250ms", want: 250 * time.Millisecond},
		{in: " 2d ", want: 48 * time.Hour},
		{in: "0", want: 0}, // parses; validation decides whether zero is allowed
		{in: "0d", want: 0},
		{in: "", wantErr: true},
		{in: "   ", wantErr: true},
		{in: "-1m", wantErr: true},
		{in: "-5d", wantErr: true},
		{in: "1d-1h", wantErr: true},
		{in: "1.5d", wantErr: true},
		{in: "d", wantErr: true},
		{in: "5", wantErr: true},
		{in: "5x", wantErr: true},
		{in: "5dd", wantErr: true},
		{in: "1h2d", wantErr: true},
		{in: "999999999d", wantErr: true},
		{in: "106751d24h", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var d Duration
			err := d.UnmarshalText([]byte(tt.in))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("UnmarshalText(%q) = %v, want error", tt.in, d.Duration)
				}
				return
			}
			if err != nil {
				t.Fatalf("UnmarshalText(%q): %v", tt.in, err)
			}
			if d.Duration != tt.want {
				t.Errorf("UnmarshalText(%q) = %v, want %v", tt.in, d.Duration, tt.want)
			}
		})
	}
}

func TestDurationErrorMessage(t *testing.T) {
	var d Duration
	err := d.UnmarshalText([]byte("5x"))
	want := `invalid duration "5x": unknown unit "x" (want e.g. "30s", "15m", "1h30m" or "5d")`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func TestDurationMarshalText(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{5 * 24 * time.Hour, "5d"},
		{24 * time.Hour, "1d"},
		{36 * time.Hour, "36h0m0s"},
		{time.Minute, "1m0s"},
		{0, "0s"},
	}
	for _, tt := range tests {
		d := Duration{tt.in}
		b, err := d.MarshalText()
		if err != nil || string(b) != tt.want {
			t.Errorf("MarshalText(%v) = %q, %v; want %q", tt.in, b, err, tt.want)
		}
		if d.String() != tt.want {
			t.Errorf("String(%v) = %q, want %q", tt.in, d.String(), tt.want)
		}
		var back Duration
		if err := back.UnmarshalText(b); err != nil || back != d {
			t.Errorf("round trip of %v: got %v, %v", tt.in, back.Duration, err)
		}
	}
}

func TestSizeUnmarshalText(t *testing.T) {
	tests := []struct {
		in      string
		want    Size
		wantErr bool
	}{
		{in: "512", want: 512},
		{in: "512B", want: 512},
		{in: "10KB", want: 10 << 10},
		{in: "25MB", want: 25 << 20},
		{in: "1GB", want: 1 << 30},
		{in: "25MiB", want: 25 << 20},
		{in: "25mib", want: 25 << 20},
		{in: "25mb", want: 25 << 20},
		{in: "10 kb", want: 10 << 10},
		{in: "2KiB", want: 2 << 10},
		{in: "3G", want: 3 << 30},
		{in: "1m", want: 1 << 20},
		{in: "0", want: 0},
		{in: "", wantErr: true},
		{in: "MB", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "-1KB", wantErr: true},
		{in: "1.5MB", wantErr: true},
		{in: "25XB", wantErr: true},
		{in: "25 M B", wantErr: true},
		{in: "9999999999999GB", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var s Size
			err := s.UnmarshalText([]byte(tt.in))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("UnmarshalText(%q) = %d, want error", tt.in, s)
				}
				return
			}
			if err != nil {
				t.Fatalf("UnmarshalText(%q): %v", tt.in, err)
			}
			if s != tt.want {
				t.Errorf("UnmarshalText(%q) = %d, want %d", tt.in, s, tt.want)
			}
		})
	}
}

func TestSizeUnmarshalTOML(t *testing.T) {
	tests := []struct {
		in      any
		want    Size
		wantErr bool
	}{
		{in: int64(1048576), want: 1 << 20},
		{in: int64(0), want: 0},
		{in: "25MB", want: 25 << 20},
		{in: int64(-1), wantErr: true},
		{in: 1.5, wantErr: true},
		{in: true, wantErr: true},
		{in: "lots", wantErr: true},
	}
	for _, tt := range tests {
		var s Size
		err := s.UnmarshalTOML(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("UnmarshalTOML(%#v) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && s != tt.want {
			t.Errorf("UnmarshalTOML(%#v) = %d, want %d", tt.in, s, tt.want)
		}
	}
}

func TestSizeString(t *testing.T) {
	tests := []struct {
		in   Size
		want string
	}{
		{0, "0B"},
		{512, "512B"},
		{1536, "1536B"},
		{1 << 10, "1KiB"},
		{25 << 20, "25MiB"},
		{1 << 30, "1GiB"},
		{3 << 29, "1536MiB"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(tt.in), got, tt.want)
		}
		var back Size
		if err := back.UnmarshalText([]byte(tt.in.String())); err != nil || back != tt.in {
			t.Errorf("round trip of %d: got %d, %v", int64(tt.in), back, err)
		}
	}
}
