package airgap

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/outboxmta/outbox/internal/safeio"
	"github.com/outboxmta/outbox/spool"
)

const (
	ackMagic   = "OUTBOX-ACK"
	ackVersion = 1
	// maxAck bounds what reading an acknowledgement allocates: 100k
	// messages take about 2 MB.
	maxAck = 256 << 20
)

// Ack is an acknowledgement: the importing host has the messages IDs of
// bundle Bundle from host Source in its care.
type Ack struct {
	Bundle   string
	Source   string // the exporting host
	Importer string
	Created  time.Time
	IDs      []string // source queue IDs
	Signed   bool
}

// AckFor returns the acknowledgement of an import.
func AckFor(res *ImportResult, host string, now time.Time) *Ack {
	return &Ack{Bundle: res.Bundle, Source: res.Source, Importer: host, Created: now.UTC().Truncate(time.Second), IDs: res.Accepted}
}

// Write writes the acknowledgement to file atomically, signed with
// keys.Signer when there is one.
func (a *Ack) Write(file string, keys *Keys) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %d\nbundle %s\nsource %s\nimporter %s\ncreated %s\n", ackMagic, ackVersion,
		a.Bundle, a.Source, a.Importer, a.Created.Format(time.RFC3339))
	for _, id := range a.IDs {
		fmt.Fprintf(&b, "id %s\n", id)
	}
	sum := sha256.Sum256(b.Bytes())
	b.Write(keys.sealLine(ackMagic, sum[:]))
	if err := safeio.WriteFile(file, b.Bytes(), 0o640, nil); err != nil {
		return fmt.Errorf("airgap: write acknowledgement: %w", err)
	}
	return nil
}

// ReadAck reads and verifies an acknowledgement file; with trusted keys it
// must be signed by one of them.
func ReadAck(file string, keys *Keys) (*Ack, error) {
	a, err := readAck(file, keys)
	if err != nil {
		return nil, fmt.Errorf("airgap: acknowledgement %s: %w", file, err)
	}
	return a, nil
}

func readAck(file string, keys *Keys) (*Ack, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxAck {
		return nil, refused("%d bytes is too large for an acknowledgement", fi.Size())
	}
	s, at, err := readSeal(f, fi.Size(), ackMagic)
	if err != nil {
		return nil, err
	}
	if err := keys.trust(s, ackMagic); err != nil {
		return nil, err
	}
	body := make([]byte, at)
	if _, err := io.ReadFull(f, body); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	if err := s.verify(ackMagic, sum[:]); err != nil {
		return nil, err
	}
	a := &Ack{Signed: s.key != nil}
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	if len(lines) < 5 || lines[0] != fmt.Sprintf("%s %d", ackMagic, ackVersion) {
		return nil, refused("not an %s %d file", ackMagic, ackVersion)
	}
	for _, line := range lines[1:] {
		k, v, _ := strings.Cut(line, " ")
		switch k {
		case "bundle":
			a.Bundle = v
		case "source":
			a.Source = v
		case "importer":
			a.Importer = v
		case "created":
			a.Created, err = time.Parse(time.RFC3339, v)
		case "id":
			if !spool.ValidID(v) {
				return nil, refused("bad queue ID %q", v)
			}
			a.IDs = append(a.IDs, v)
		}
		if err != nil {
			return nil, refused("line %q: %v", line, err)
		}
	}
	if !spool.ValidID(a.Bundle) || a.Source == "" {
		return nil, refused("no bundle or source line")
	}
	return a, nil
}

// Apply deletes the acknowledged messages from exported/ and returns their
// IDs. It deletes nothing unless the acknowledgement is for this host's
// bundle; messages not in exported/ (acknowledged before, or requeued
// meanwhile) are left alone.
func (a *Ack) Apply(sp *spool.Spool, host string) ([]string, error) {
	if a.Source != host {
		return nil, fmt.Errorf("airgap: acknowledgement of bundle %s: %w", a.Bundle,
			refused("it acknowledges mail from %s, and this host is %s", a.Source, host))
	}
	return sp.RemoveAll(a.IDs, spool.Exported)
}
