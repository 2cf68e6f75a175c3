package spool

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// Count returns how many records state st holds and the ID of the oldest
// (by arrival; "" when there is none). It reads the directory only, no
// record, so it is cheap enough for every metrics scrape: a large queue
// costs one getdents pass.
func (s *Spool) Count(st State) (n int, oldest string, err error) {
	f, err := os.Open(s.dir(st))
	if err != nil {
		return 0, "", fmt.Errorf("spool: count %s: %w", st, err)
	}
	defer f.Close()
	for {
		entries, err := f.ReadDir(1024)
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, tmpPrefix) || !e.Type().IsRegular() || !ValidID(name) {
				continue
			}
			n++
			if oldest == "" || name < oldest {
				oldest = name
			}
		}
		if err != nil {
			return n, oldest, nil // io.EOF: ReadDir returns no other error once it has begun
		}
	}
}

// IDTime returns the arrival time an ID records (to the microsecond), and
// false if id is not a queue ID.
func IDTime(id string) (time.Time, bool) {
	if !ValidID(id) {
		return time.Time{}, false
	}
	var t int64
	for i := 0; i < 11; i++ {
		t = t<<5 | int64(strings.IndexByte(crockford, id[i]))
	}
	return time.UnixMicro(t), true
}
