package sendmail

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadMessage(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		ignoreDots bool
		want       string
	}{
		{"empty", "", false, ""},
		{"lf to crlf", "Subject: x\n\nbody\n", false, "Subject: x\r\n\r\nbody\r\n"},
		{"crlf kept", "a\r\nb\r\n", false, "a\r\nb\r\n"},
		{"bare cr", "a\rb\r", false, "a\r\nb\r\n"},
		{"no final newline", "a\nb", false, "a\r\nb\r\n"},
		{"dot lf ends input", "a\n.\nnot read\n", false, "a\r\n"},
		{"dot crlf ends input", "a\r\n.\r\nnot read\r\n", false, "a\r\n"},
		{"dot at eof", "a\n.", false, "a\r\n"},
		{"dot cr at eof", "a\n.\r", false, "a\r\n"},
		{"dot as first line", ".\nrest\n", false, ""},
		{"dot kept with -i", "a\n.\nmore\n", true, "a\r\n.\r\nmore\r\n"},
		{"dot at eof kept with -i", "a\n.", true, "a\r\n.\r\n"},
		{"double dot not unstuffed", "..foo\n.. \n", false, "..foo\r\n.. \r\n"},
		{"dot with text is not the end", ". \n.x\nend\n", false, ". \r\n.x\r\nend\r\n"},
		{"dot after bare cr is mid-line", "a\r.\nb\n", false, "a\r\n.\r\nb\r\n"},
		{"binary bytes", "\xff\xfe\x00\x80\n\xc3\xa9\n", false, "\xff\xfe\x00\x80\r\n\xc3\xa9\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// One byte at a time too, so line detection cannot depend on
			// how reads happen to be split.
			for _, r := range []io.Reader{strings.NewReader(tt.in), iotest.OneByteReader(strings.NewReader(tt.in))} {
				got, err := ReadMessage(r, tt.ignoreDots, 0)
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != tt.want {
					t.Errorf("got %q, want %q", got, tt.want)
				}
			}
		})
	}
}

func TestReadMessageLongLine(t *testing.T) {
	// Longer than bufio's buffer, followed by a dot line: the continuation
	// of a long line must not be mistaken for the start of a line.
	long := strings.Repeat("x", 10000)
	in := long + "\n.\nafter\n"
	got, err := ReadMessage(strings.NewReader(in), false, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := long + "\r\n"; string(got) != want {
		t.Errorf("got %d bytes, want %d", len(got), len(want))
	}
	// The dot line straddles the first and second fill of the buffer.
	in = strings.Repeat("y", 4095) + "\n.\nz\n"
	got, err = ReadMessage(strings.NewReader(in), false, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Repeat("y", 4095) + "\r\n"; string(got) != want {
		t.Errorf("dot at buffer boundary: got ...%q", got[len(got)-8:])
	}
}

func TestReadMessageSizeLimit(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		max     int64
		tooBig  bool
		wantOut string
	}{
		{"exactly at limit", "abc\n", 5, false, "abc\r\n"},
		{"crlf conversion counts", "abc\n", 4, true, ""},
		{"final crlf counts", "abcd", 5, true, ""},
		{"dot ends before limit", "a\n.\n" + strings.Repeat("x", 100), 3, false, "a\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadMessage(strings.NewReader(tt.in), false, tt.max)
			if !tt.tooBig {
				if err != nil || string(got) != tt.wantOut {
					t.Fatalf("got %q, %v; want %q", got, err, tt.wantOut)
				}
				return
			}
			var ee *ExitError
			if !errors.As(err, &ee) || ee.Code != ExDataErr {
				t.Fatalf("got %v, want ExDataErr", err)
			}
			if want := "sendmail: message too large (limit " + strconv.FormatInt(tt.max, 10) + " bytes)"; ee.Msg != want {
				t.Errorf("message %q, want %q", ee.Msg, want)
			}
		})
	}
}

// countingReader reports how much was read, to show that reading stops
// at the limit instead of draining an endless input.
type countingReader struct{ n int64 }

func (c *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
		if i%80 == 79 {
			p[i] = '\n'
		}
	}
	c.n += int64(len(p))
	return len(p), nil
}

func TestReadMessageStopsAtLimit(t *testing.T) {
	r := &countingReader{}
	_, err := ReadMessage(r, true, 1<<20)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != ExDataErr {
		t.Fatalf("got %v, want ExDataErr", err)
	}
	if r.n > 1<<20+64<<10 {
		t.Errorf("read %d bytes for a 1 MiB limit", r.n)
	}
}

func TestReadMessageReadError(t *testing.T) {
	r := iotest.ErrReader(errors.New("boom"))
	_, err := ReadMessage(io.MultiReader(strings.NewReader("a\n"), r), true, 0)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != ExIOErr || !strings.Contains(ee.Msg, "boom") {
		t.Fatalf("got %v, want ExIOErr mentioning the cause", err)
	}
}

func TestCappedBufferNeverExceedsMax(t *testing.T) {
	b := &cappedBuffer{max: 10000}
	chunk := bytes.Repeat([]byte("z"), 999)
	for i := 0; i < 10; i++ {
		if _, err := b.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if cap(b.b) > 10000 {
		t.Errorf("capacity %d beyond the 10000-byte limit", cap(b.b))
	}
	if _, err := b.Write(chunk[:11]); !errors.Is(err, errTooLarge) {
		t.Errorf("write past the limit: %v", err)
	}
}
