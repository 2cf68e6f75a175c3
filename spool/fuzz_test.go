package spool

// Fuzz targets for the record format: what Commit writes reads back as it
// was, and whatever bytes a file holds, a reader gets either the whole
// record or an error matching ErrCorrupt, never part of one.
//
//	go test ./spool -run XXX -fuzz FuzzRecordDecode -fuzztime 1m

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unicode/utf8"
)

// fuzzSpool opens a spool in a temporary directory without fsyncs: the
// format is what is fuzzed, not the disk. One spool serves all the inputs a
// fuzz worker runs, one after the other, each leaving it empty.
func fuzzSpool(t testing.TB) *Spool {
	s, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.noSync = true
	return s
}

// seedRecord returns the bytes of a record Commit wrote, for seeds.
func seedRecord(t testing.TB, env *Envelope, body string) []byte {
	s := fuzzSpool(t)
	if err := s.Put(Queue, env, bytes.NewReader([]byte(body))); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(s.path(Queue, env.ID))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func seedEnvelope() *Envelope {
	uid := 1000
	return &Envelope{
		From: "app@example.com",
		Recipients: []Recipient{
			{Addr: "a@example.net", Status: Pending},
			{Addr: "b@example.net", Status: Failed, Reply: "550 5.1.1 no such user", DSNNotify: "FAILURE"},
		},
		Origin:   Origin{Kind: "sendmail", Client: "/run/outbox/submit.sock", UID: &uid, User: "alice"},
		EightBit: true, Attempts: 2, LastError: "451 4.3.0 try later",
	}
}

// decodeFile puts data into queue/ as a record and reads it back with Read
// and with Scan.
func decodeFile(t *testing.T, s *Spool, data []byte) (*Envelope, []byte, error) {
	t.Helper()
	id := NewID(time.Now())
	if err := os.WriteFile(s.path(Queue, id), data, 0o640); err != nil {
		t.Fatal(err)
	}
	env, body, err := s.Read(Queue, id)
	if err != nil {
		if env != nil || body != nil {
			t.Fatalf("Read failed (%v) but returned a partial result", err)
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Read: %v, not ErrCorrupt", err)
		}
	}
	if env != nil && env.ID != id {
		// Scan wants the file named by its envelope's ID.
		if err := os.Rename(s.path(Queue, id), s.path(Queue, env.ID)); err != nil {
			t.Fatal(err)
		}
		id = env.ID
	}
	// Scan reads envelopes only, so it may pass on a record whose message
	// is damaged, but it must pass on every record Read accepts, as Read
	// decoded it, and move every record it refuses to corrupt/.
	var scanned []*Envelope
	if err := s.Scan(Queue, func(e *Envelope) error {
		scanned = append(scanned, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	switch {
	case len(scanned) > 1:
		t.Fatalf("Scan found %d records", len(scanned))
	case len(scanned) == 1 && env != nil && !bytes.Equal(mustEncode(t, scanned[0]), mustEncode(t, env)):
		t.Fatalf("Scan and Read disagree: %+v and %+v", scanned[0], env)
	case len(scanned) == 0 && env != nil:
		t.Fatalf("Scan refused what Read accepted: %+v", env)
	case len(scanned) == 0:
		if _, err := os.Stat(s.path(Corrupt, id)); err != nil {
			t.Fatalf("Scan refused %s without quarantining it: %v", id, err)
		}
	}
	for _, st := range []State{Queue, Corrupt} {
		if err := os.RemoveAll(s.dir(st)); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(s.dir(st), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	return env, body, err
}

func mustEncode(t *testing.T, env *Envelope) []byte {
	t.Helper()
	b, err := encodeEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzRecordDecode reads arbitrary bytes as a record.
func FuzzRecordDecode(f *testing.F) {
	rec := seedRecord(f, seedEnvelope(), "Subject: x\r\n\r\nbody\r\n")
	f.Add(rec)
	f.Add(rec[:len(rec)-1])
	f.Add([]byte(header))
	f.Add(append([]byte(header), trailer{envLen: 2}.bytes()...))
	s := fuzzSpool(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		env, body, err := decodeFile(t, s, data)
		if err != nil {
			return
		}
		if env.Size != int64(len(body)) || !ValidID(env.ID) {
			t.Fatalf("accepted envelope %+v with %d bytes of message", env, len(body))
		}
		if !bytes.HasPrefix(data, []byte(header)) || !bytes.Equal(data[len(header):len(header)+len(body)], body) {
			t.Fatalf("message %q is not what the file holds", body)
		}
	})
}

// FuzzRecordDamage damages a committed record: it is flipped at one byte,
// truncated or extended. Reading it must give the original record or an
// error matching ErrCorrupt: a damaged record is never read as different
// mail.
func FuzzRecordDamage(f *testing.F) {
	f.Add("Subject: x\r\n\r\nbody\r\n", uint16(20), byte(1), uint16(0))
	f.Add("", uint16(0), byte(0), uint16(3))
	f.Add("a\r\n", uint16(300), byte(0x20), uint16(0))
	s := fuzzSpool(f)
	f.Fuzz(func(t *testing.T, body string, pos uint16, xor byte, cut uint16) {
		env := seedEnvelope()
		if err := s.Put(Queue, env, bytes.NewReader([]byte(body))); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(s.path(Queue, env.ID))
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(s.path(Queue, env.ID))
		want := mustEncode(t, env)
		if int(pos) < len(data) {
			data[pos] ^= xor
		}
		switch {
		case cut == 0:
		case int(cut) <= len(data):
			data = data[:len(data)-int(cut)]
		default:
			data = append(data, bytes.Repeat([]byte{'\n'}, int(cut)-len(data))...)
		}
		got, gotBody, err := decodeFile(t, s, data)
		if err != nil {
			return
		}
		if string(gotBody) != body {
			t.Fatalf("damaged record read with message %q, want %q", gotBody, body)
		}
		if g := mustEncode(t, got); !bytes.Equal(g, want) {
			t.Fatalf("damaged record read as\n%s\nwant\n%s", g, want)
		}
	})
}

// FuzzRecordRoundTrip commits a record with fuzzed content and envelope
// and reads it back: decode(encode(x)) == x. A record Commit refuses
// leaves no file behind.
func FuzzRecordRoundTrip(f *testing.F) {
	f.Add([]byte("Subject: x\r\n\r\nbody\r\n"), "app@example.com", "a@example.net", "451 4.3.0 later", int64(1700000000), 3)
	f.Add([]byte{}, "", "\"q@q\"@x", "", int64(0), 0)
	f.Add([]byte("OUTBOX-END body=0\n"), "ü@例え.jp", "b@[1.2.3.4]", "\x00\xff", int64(-62135596801), -1)
	s := fuzzSpool(f)
	f.Fuzz(func(t *testing.T, body []byte, from, rcpt, lastErr string, arrived int64, attempts int) {
		in := &Envelope{
			From:       from,
			Recipients: []Recipient{{Addr: rcpt, Status: Pending, Reply: lastErr}},
			Arrived:    time.Unix(arrived, 0).UTC(),
			Origin:     Origin{Kind: "smtp", Client: "127.0.0.1:1234", Helo: from},
			Attempts:   attempts,
			LastError:  lastErr,
		}
		err := s.Put(Queue, in, bytes.NewReader(body))
		if err != nil {
			// Only a time JSON cannot represent may be refused.
			if y := in.Arrived.Year(); y >= 0 && y <= 9999 {
				t.Fatalf("Put: %v", err)
			}
			if left, _ := filepath.Glob(filepath.Join(s.dir(Queue), "*")); len(left) > 0 {
				t.Fatalf("refused record left %q behind", left)
			}
			return
		}
		out, gotBody, err := s.Read(Queue, in.ID)
		os.Remove(s.path(Queue, in.ID))
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if !bytes.Equal(gotBody, body) {
			t.Fatalf("message %q read back as %q", body, gotBody)
		}
		// What JSON makes of in is what must come back.
		var want Envelope
		if err := json.Unmarshal(mustEncode(t, in), &want); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(mustEncode(t, out), mustEncode(t, &want)) {
			t.Fatalf("envelope\n%s\nread back as\n%s", mustEncode(t, &want), mustEncode(t, out))
		}
		// JSON stores strings as UTF-8: only invalid UTF-8 (never an
		// address: address.Valid refuses it) may come back changed.
		for _, p := range [][2]string{{in.From, out.From}, {in.Recipients[0].Addr, out.Recipients[0].Addr}, {in.LastError, out.LastError}} {
			if p[0] != p[1] && utf8.ValidString(p[0]) {
				t.Fatalf("%q read back as %q", p[0], p[1])
			}
		}
		if !out.Arrived.Equal(in.Arrived) || out.Attempts != in.Attempts {
			t.Fatalf("arrived %v attempts %d read back as %v, %d", in.Arrived, in.Attempts, out.Arrived, out.Attempts)
		}
	})
}
