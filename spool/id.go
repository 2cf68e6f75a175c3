package spool

import (
	"crypto/rand"
	"encoding/binary"
	"time"
)

// crockford is Crockford's base32 alphabet: in ASCII order, so IDs sort by
// arrival time, and without I, L, O and U, so they read aloud without doubt.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewID returns a queue ID: 11 characters of microseconds since the epoch
// followed by 5 random ones. IDs from one process or many sort by arrival;
// the rare clash is caught by the no-replace rename in Commit.
func NewID(now time.Time) string {
	var b [16]byte
	t := uint64(now.UnixMicro())
	for i := 10; i >= 0; i-- {
		b[i] = crockford[t&31]
		t >>= 5
	}
	var r [8]byte
	rand.Read(r[:])
	n := binary.LittleEndian.Uint64(r[:])
	for i := 11; i < 16; i++ {
		b[i] = crockford[n&31]
		n >>= 5
	}
	return string(b[:])
}

// ValidID reports whether s looks like a queue ID, so that an ID given on a
// command line can never name a path outside the spool.
func ValidID(s string) bool {
	if len(s) != 16 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z') || c == 'I' || c == 'L' || c == 'O' || c == 'U' {
			return false
		}
	}
	return true
}
