package airgap

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"time"

	"github.com/outboxmta/outbox/spool"
)

// ImportResult says what an import did.
type ImportResult struct {
	Bundle     string    `json:"bundle"`
	Source     string    `json:"source"`
	Created    time.Time `json:"created"`
	Messages   int       `json:"messages"`   // in the bundle
	Queued     int       `json:"queued"`     // new here
	Duplicates int       `json:"duplicates"` // imported before
	// IDs are the local queue IDs of the messages queued.
	IDs []string `json:"ids"`
	// Accepted are the source IDs of every message now in this host's
	// care, new or duplicate: what the acknowledgement names.
	Accepted []string `json:"-"`
	Signed   bool     `json:"signed"`
}

// Import verifies the bundle file whole, then queues each message it
// carries that was not imported before, in one batch. A damaged, truncated
// or untrusted bundle is refused (an error matching ErrRefused) with
// nothing queued. The messages imported are in the journal, on disk,
// before Import returns.
func Import(ctx context.Context, sp *spool.Spool, file string, o Options) (*ImportResult, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("airgap: import: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("airgap: import: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("airgap: import %s: not a regular file", file)
	}
	s, sealAt, err := readSeal(f, fi.Size(), bundleMagic)
	if err == nil {
		err = o.Keys.trust(s, bundleMagic) // before reading any further
	}
	if err != nil {
		return nil, fmt.Errorf("airgap: import %s: %w", file, err)
	}
	now := o.now()
	j, err := openJournal(ctx, sp.Root(), now, o.Keep)
	if err != nil {
		return nil, err
	}
	defer j.close()

	r := &bundleReader{o: &o, j: j, batch: sp.NewBatch(spool.Queue), now: now, total: fi.Size()}
	defer r.batch.Abort()
	if err := r.read(ctx, io.NewSectionReader(f, 0, sealAt), s); err != nil {
		return nil, fmt.Errorf("airgap: import %s: %w", file, err)
	}
	res := r.res
	res.Signed = s.key != nil
	ids, err := r.batch.Commit()
	// Whatever was published is journaled, even after an error: it is
	// queued, and must not be queued again.
	entries := make([]journalEntry, len(ids))
	for i, id := range ids {
		entries[i] = journalEntry{at: now, source: res.Source, srcID: r.srcIDs[i], localID: id, bundle: res.Bundle}
	}
	if jerr := j.append(entries); err == nil {
		err = jerr
	}
	if err != nil {
		return nil, fmt.Errorf("airgap: import %s: %d of %d new messages queued: %w", file, len(ids), len(r.srcIDs), err)
	}
	res.IDs, res.Queued = ids, len(ids)
	for i, id := range ids {
		o.log().Debug("imported", "id", id, "source", res.Source, "source_id", r.srcIDs[i], "bundle", res.Bundle)
	}
	o.log().Info("imported bundle", "bundle", res.Bundle, "source", res.Source, "file", file,
		"messages", res.Messages, "queued", res.Queued, "duplicates", res.Duplicates, "signed", res.Signed)
	return &res, nil
}

// bundleReader reads and checks a bundle, staging new messages.
type bundleReader struct {
	o      *Options
	j      *journal
	batch  *spool.Batch
	now    time.Time
	total  int64
	res    ImportResult
	srcIDs []string // of the staged messages, in batch order
	count  *countReader
}

// read checks the bundle body (everything before the seal) entry by entry
// and then against the seal.
func (r *bundleReader) read(ctx context.Context, body io.Reader, s *seal) error {
	sum := sha256.New()
	r.count = &countReader{r: bufio.NewReaderSize(body, 256<<10)}
	in := io.TeeReader(r.count, sum)
	err := r.entries(ctx, in)
	if errors.Is(err, ErrRefused) {
		// Most often the bundle is damaged: say so, rather than what the
		// damage happened to break first.
		if _, derr := io.Copy(io.Discard, in); derr == nil {
			if verr := s.verify(bundleMagic, sum.Sum(nil)); verr != nil {
				return verr
			}
		}
		return err
	}
	if err != nil {
		return err
	}
	return s.verify(bundleMagic, sum.Sum(nil))
}

// entries reads the archive from in, checking and staging its messages.
func (r *bundleReader) entries(ctx context.Context, in io.Reader) error {
	tr := tar.NewReader(in)

	// Message entries and manifest lines must agree one to one, in order:
	// each side is folded into a hash, so memory stays bounded.
	entries, lines := sha256.New(), sha256.New()
	var last string
	seenManifest := false
	for i := 0; ; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return refused("damaged or truncated: %v", err)
		}
		if hdr.Typeflag != tar.TypeReg || seenManifest {
			return refused("unexpected entry %q", hdr.Name)
		}
		switch {
		case i == 0:
			if hdr.Name != headerName {
				return refused("first entry is %q, not %s: not an Outbox bundle", hdr.Name, headerName)
			}
			if err := r.header(tr); err != nil {
				return err
			}
		case strings.HasPrefix(hdr.Name, messagePrefix):
			id := hdr.Name[len(messagePrefix):]
			if !spool.ValidID(id) || id <= last {
				return refused("entry %q: not a queue ID in ascending order", hdr.Name)
			}
			last = id
			if err := r.message(tr, id, hdr.Size, entries); err != nil {
				return err
			}
		case hdr.Name == manifestName:
			seenManifest = true
			if err := readManifest(tr, lines); err != nil {
				return err
			}
		default:
			return refused("unexpected entry %q", hdr.Name)
		}
	}
	if !seenManifest {
		return refused("no %s: the bundle is incomplete", manifestName)
	}
	// After the end-of-archive blocks only zero padding may follow.
	if err := zeros(in); err != nil {
		return err
	}
	if string(entries.Sum(nil)) != string(lines.Sum(nil)) {
		return refused("%s does not match the messages", manifestName)
	}
	return nil
}

func (r *bundleReader) header(tr io.Reader) error {
	var h bundleHeader
	if err := json.NewDecoder(io.LimitReader(tr, 64<<10)).Decode(&h); err != nil {
		return refused("%s: %v", headerName, err)
	}
	switch {
	case h.Format != formatName:
		return refused("%s: format %q, not %q", headerName, h.Format, formatName)
	case h.Version != formatVersion:
		return refused("bundle format version %d; this release reads version %d", h.Version, formatVersion)
	case !spool.ValidID(h.ID):
		return refused("%s: bad bundle ID %q", headerName, h.ID)
	case !validHost(h.Source):
		return refused("%s: bad source host %q", headerName, h.Source)
	}
	r.res.Bundle, r.res.Source, r.res.Created = h.ID, h.Source, h.Created
	return nil
}

// validHost keeps the source name to characters that are safe in the
// journal's and the acknowledgement's space-separated lines.
func validHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// message checks one record and stages it unless it was imported before.
func (r *bundleReader) message(tr io.Reader, id string, size int64, entries hash.Hash) error {
	h := sha256.New()
	rec := io.TeeReader(tr, h)
	r.res.Messages++
	r.res.Accepted = append(r.res.Accepted, id)
	if r.j.has(r.res.Source, id) {
		r.res.Duplicates++
		if _, err := io.Copy(io.Discard, rec); err != nil {
			return refused("damaged or truncated: %v", err)
		}
	} else {
		_, err := r.batch.Add(rec, func(env *spool.Envelope) error {
			if env.ID != id {
				return refused("messages/%s holds the record of %s", id, env.ID)
			}
			env.Imported = &spool.Imported{At: r.now, Source: r.res.Source, ID: id, Bundle: r.res.Bundle}
			env.Attempts, env.NextAttempt, env.LastError = 0, r.now, ""
			return nil
		})
		switch {
		case errors.Is(err, spool.ErrCorrupt), errors.Is(err, ErrRefused):
			return refused("messages/%s: %v", id, err)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return refused("damaged or truncated: %v", err)
		case err != nil:
			return err // the spool's trouble, not the bundle's
		}
		r.srcIDs = append(r.srcIDs, id)
	}
	m := manifestEntry{ID: id, RecordSize: size, SHA256: hex.EncodeToString(h.Sum(nil))}
	entries.Write([]byte(m.checkLine()))
	r.o.progress(Progress{Messages: r.res.Messages, Bytes: r.count.n, TotalBytes: r.total})
	return nil
}

// readManifest folds the manifest's lines into h as checkLines.
func readManifest(tr io.Reader, h hash.Hash) error {
	sc := bufio.NewScanner(tr)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var m manifestEntry
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return refused("%s: %v", manifestName, err)
		}
		h.Write([]byte(m.checkLine()))
	}
	if err := sc.Err(); err != nil {
		return refused("%s: %v", manifestName, err)
	}
	return nil
}

// zeros reads r to its end and fails unless every byte is zero.
func zeros(r io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		for _, b := range buf[:n] {
			if b != 0 {
				return refused("unexpected data after the end of the archive")
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
