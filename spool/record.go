package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

const (
	header        = "OUTBOX-SPOOL 1\n"
	trailerFormat = "OUTBOX-END body=%016x bodycrc=%08x env=%08x envcrc=%08x\n"
	// trailerLen is the length of every trailer written by trailerFormat.
	trailerLen = len("OUTBOX-END body=") + 16 + len(" bodycrc=") + 8 + len(" env=") + 8 + len(" envcrc=") + 8 + 1
	// maxEnvelope bounds what a reader allocates for a damaged trailer.
	maxEnvelope = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt marks a record that is torn, truncated or damaged.
var ErrCorrupt = errors.New("corrupt record")

// trailer describes where the parts of a record are.
type trailer struct {
	bodyLen int64
	bodyCRC uint32
	envLen  int64
	envCRC  uint32
}

func (t trailer) bytes() []byte {
	return fmt.Appendf(nil, trailerFormat, t.bodyLen, t.bodyCRC, t.envLen, t.envCRC)
}

// recordLen is the file length the trailer implies.
func (t trailer) recordLen() int64 {
	return int64(len(header)) + t.bodyLen + t.envLen + int64(trailerLen)
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// readTrailer reads and checks the header line and trailer of the record in
// f, whose size is size.
func readTrailer(f io.ReaderAt, size int64) (trailer, error) {
	var t trailer
	if size < int64(len(header)+trailerLen) {
		return t, corrupt("%d bytes is too short", size)
	}
	h := make([]byte, len(header))
	if _, err := f.ReadAt(h, 0); err != nil {
		return t, fmt.Errorf("read header: %w", err)
	}
	if string(h) != header {
		return t, corrupt("bad header %q (want %q)", h, header)
	}
	buf := make([]byte, trailerLen)
	if _, err := f.ReadAt(buf, size-int64(trailerLen)); err != nil {
		return t, fmt.Errorf("read trailer: %w", err)
	}
	n, err := fmt.Sscanf(string(buf), trailerFormat, &t.bodyLen, &t.bodyCRC, &t.envLen, &t.envCRC)
	if err != nil || n != 4 {
		return t, corrupt("no valid trailer")
	}
	if t.envLen > maxEnvelope || t.bodyLen < 0 || t.envLen < 2 || t.recordLen() != size {
		return t, corrupt("trailer says %d bytes, file has %d", t.recordLen(), size)
	}
	return t, nil
}

// readEnvelope reads the envelope of the record in f, checking its checksum
// but not the message's.
func readEnvelope(f *os.File) (*Envelope, trailer, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, trailer{}, err
	}
	t, err := readTrailer(f, fi.Size())
	if err != nil {
		return nil, t, err
	}
	buf := make([]byte, t.envLen)
	if _, err := f.ReadAt(buf, int64(len(header))+t.bodyLen); err != nil {
		return nil, t, fmt.Errorf("read envelope: %w", err)
	}
	if crc32.Checksum(buf, castagnoli) != t.envCRC {
		return nil, t, corrupt("envelope checksum mismatch")
	}
	var env Envelope
	if err := json.Unmarshal(buf, &env); err != nil {
		return nil, t, corrupt("envelope: %v", err)
	}
	if env.Size != t.bodyLen {
		return nil, t, corrupt("envelope size %d, message has %d bytes", env.Size, t.bodyLen)
	}
	if !ValidID(env.ID) {
		return nil, t, corrupt("envelope has bad id %q", env.ID)
	}
	return &env, t, nil
}

// verifyBody checks the message's checksum against the trailer.
func verifyBody(f io.ReaderAt, t trailer) error {
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, io.NewSectionReader(f, int64(len(header)), t.bodyLen)); err != nil {
		return fmt.Errorf("read message: %w", err)
	}
	if h.Sum32() != t.bodyCRC {
		return corrupt("message checksum mismatch")
	}
	return nil
}

// encodeEnvelope returns the envelope line (JSON and newline).
func encodeEnvelope(env *Envelope) ([]byte, error) {
	b, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("encode envelope: %w", err)
	}
	return append(b, '\n'), nil
}
