package airgap

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/outboxmta/outbox/spool"
)

const (
	bundleMagic   = "OUTBOX-BUNDLE"
	formatName    = "outbox-bundle"
	formatVersion = 1
	headerName    = "bundle.json"
	manifestName  = "manifest.jsonl"
	messagePrefix = "messages/"
)

// ErrNothing means there was no message to export.
var ErrNothing = errors.New("nothing to export")

// bundleHeader is bundle.json.
type bundleHeader struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	ID      string    `json:"id"`
	Source  string    `json:"source"`
	Created time.Time `json:"created"`
}

// manifestEntry is one line of manifest.jsonl.
type manifestEntry struct {
	ID         string   `json:"id"`
	From       string   `json:"from"`
	To         []string `json:"to"`
	Size       int64    `json:"size"`        // message bytes
	RecordSize int64    `json:"record_size"` // bytes of messages/ID
	SHA256     string   `json:"sha256"`      // of messages/ID
}

// checkLine is what the importer compares between a message entry and its
// manifest line.
func (m *manifestEntry) checkLine() string {
	return fmt.Sprintf("%s %d %s\n", m.ID, m.RecordSize, m.SHA256)
}

// Progress is reported after each message of an export or import.
type Progress struct {
	Messages, Total   int // Total: messages to export; 0 on import
	Bytes, TotalBytes int64
}

// Options are what export and import need from the configuration.
type Options struct {
	Host     string        // this host: a bundle's source, an ack's importer
	BundleID string        // for Export: the new bundle's ID; default a new one
	Keys     *Keys         // nil: no signing, no trust policy
	Keep     time.Duration // import journal retention, at least the queue lifetime; 0: 30 days
	Log      *slog.Logger
	Progress func(Progress) // optional
	Now      func() time.Time
}

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Options) log() *slog.Logger {
	if o.Log != nil {
		return o.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (o *Options) progress(p Progress) {
	if o.Progress != nil {
		o.Progress(p)
	}
}

// ExportResult says what an export wrote.
type ExportResult struct {
	Bundle   string `json:"bundle"`
	File     string `json:"file"`
	Messages int    `json:"messages"`
	Bytes    int64  `json:"bytes"`
	// Skipped were being delivered, gone or damaged when their turn came.
	Skipped int `json:"skipped"`
}

// Select returns the IDs an `export --all` takes: everything in queue/,
// and with again also everything already exported and not yet
// acknowledged.
func Select(sp *spool.Spool, again bool) ([]string, error) {
	ids, err := sp.IDs(spool.Queue)
	if err != nil {
		return nil, err
	}
	if again {
		ex, err := sp.IDs(spool.Exported)
		if err != nil {
			return nil, err
		}
		ids = append(ids, ex...)
	}
	return ids, nil
}

// Export writes the records ids (from queue/ or exported/) into a new
// bundle file, then moves those it took from queue/ to exported/. The file
// appears whole or not at all: it is written under a temporary name in
// the same directory, synced, and renamed. It fails with ErrNothing, and
// writes nothing, when none of ids could be exported; an existing file is
// never replaced.
func Export(ctx context.Context, sp *spool.Spool, ids []string, file string, o Options) (*ExportResult, error) {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) == 0 {
		return nil, ErrNothing
	}
	if _, err := os.Lstat(file); err == nil {
		return nil, fmt.Errorf("airgap: %s already exists", file)
	}
	created := o.now().UTC().Truncate(time.Second)
	res := &ExportResult{Bundle: o.BundleID, File: file}
	if !spool.ValidID(res.Bundle) {
		res.Bundle = spool.NewID(created)
	}
	tmp := filepath.Join(filepath.Dir(file), "."+filepath.Base(file)+".part")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if errors.Is(err, fs.ErrExist) {
		// Taking it over could truncate a bundle another export is
		// writing; only the sysadmin knows that none is.
		return nil, fmt.Errorf("airgap: export: %s exists: an export to %s is running or was interrupted; if none is running, remove it", tmp, file)
	}
	if err != nil {
		return nil, fmt.Errorf("airgap: export: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	w := &bundleWriter{o: &o, sp: sp, res: res, created: created}
	fromQueue, err := w.write(ctx, f, ids)
	if err != nil {
		return nil, err
	}
	if res.Messages == 0 {
		return nil, ErrNothing
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("airgap: export: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("airgap: export: %w", err)
	}
	if err := publish(tmp, file); err != nil {
		return nil, fmt.Errorf("airgap: export: %w", err)
	}
	ok = true
	// The bundle is safe on disk: only now do its messages leave the
	// queue. One delivered meanwhile (a host that also has an upstream)
	// is in the bundle anyway, and may arrive twice: at least once.
	moved, err := sp.MoveAll(fromQueue, spool.Queue, spool.Exported)
	if err != nil {
		return res, fmt.Errorf("airgap: export: the bundle %s is written, but moving its messages to exported/: %w", file, err)
	}
	if n := len(fromQueue) - len(moved); n > 0 {
		o.log().Warn("messages left the queue while being exported; the bundle carries them too", "bundle", res.Bundle, "count", n)
	}
	o.log().Info("exported bundle", "bundle", res.Bundle, "file", file, "messages", res.Messages,
		"bytes", res.Bytes, "skipped", res.Skipped, "signed", o.Keys != nil && o.Keys.Signer != nil)
	return res, nil
}

// bundleWriter writes one bundle.
type bundleWriter struct {
	o       *Options
	sp      *spool.Spool
	res     *ExportResult
	created time.Time
}

// write writes the bundle to f and returns the IDs it took from queue/.
func (w *bundleWriter) write(ctx context.Context, f *os.File, ids []string) ([]string, error) {
	// The manifest waits in a temporary file, unlinked at once: a crash
	// leaves nothing behind to clean up.
	dir := airgapDir(w.sp.Root())
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("airgap: export: %w", err)
	}
	manifest, err := os.CreateTemp(dir, "tmp-manifest-")
	if err != nil {
		return nil, fmt.Errorf("airgap: export: %w", err)
	}
	defer manifest.Close()
	if err := os.Remove(manifest.Name()); err != nil {
		return nil, fmt.Errorf("airgap: export: %w", err)
	}
	mbuf := bufio.NewWriter(manifest)

	sum := sha256.New()
	out := &countWriter{w: bufio.NewWriterSize(f, 256<<10)}
	tw := tar.NewWriter(io.MultiWriter(out, sum))
	hdr, _ := json.Marshal(bundleHeader{Format: formatName, Version: formatVersion, ID: w.res.Bundle, Source: w.o.Host, Created: w.created})
	if err := w.entry(tw, headerName, int64(len(hdr)+1), bytes.NewReader(append(hdr, '\n'))); err != nil {
		return nil, err
	}
	var fromQueue []string
	for i, id := range ids {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		st, err := w.message(tw, mbuf, id)
		switch {
		case errors.Is(err, spool.ErrLocked), errors.Is(err, fs.ErrNotExist), errors.Is(err, spool.ErrCorrupt):
			w.res.Skipped++
		case err != nil:
			return nil, err
		case st == spool.Queue:
			fromQueue = append(fromQueue, id)
		}
		w.o.progress(Progress{Messages: i + 1, Total: len(ids), Bytes: out.n})
	}
	if err := mbuf.Flush(); err != nil {
		return nil, fmt.Errorf("airgap: export: manifest: %w", err)
	}
	size, err := manifest.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, fmt.Errorf("airgap: export: manifest: %w", err)
	}
	if err := w.entry(tw, manifestName, size, io.NewSectionReader(manifest, 0, size)); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("airgap: export: %w", err)
	}
	if _, err := out.Write(w.o.Keys.sealLine(bundleMagic, sum.Sum(nil))); err != nil {
		return nil, fmt.Errorf("airgap: export: %w", err)
	}
	if err := out.w.(*bufio.Writer).Flush(); err != nil {
		return nil, fmt.Errorf("airgap: export: %w", err)
	}
	w.res.Bytes = out.n
	return fromQueue, nil
}

// message writes the record id, from queue/ or exported/, and its manifest
// line, under the record's lock so that no runner changes it meanwhile.
func (w *bundleWriter) message(tw *tar.Writer, manifest io.Writer, id string) (spool.State, error) {
	l, err := w.sp.Lock(id)
	if errors.Is(err, fs.ErrNotExist) {
		l, err = w.sp.LockIn(spool.Exported, id)
	}
	if err != nil {
		return "", err
	}
	defer l.Close()
	env, rec := l.Envelope(), l.Record()
	h := sha256.New()
	if err := w.entry(tw, messagePrefix+id, rec.Size(), io.TeeReader(rec, h)); err != nil {
		return "", err
	}
	m := manifestEntry{ID: id, From: env.From, Size: env.Size, RecordSize: rec.Size(), SHA256: hex.EncodeToString(h.Sum(nil))}
	for _, r := range env.Recipients {
		m.To = append(m.To, r.Addr)
	}
	line, _ := json.Marshal(m)
	if _, err := manifest.Write(append(line, '\n')); err != nil {
		return "", fmt.Errorf("airgap: export: manifest: %w", err)
	}
	w.res.Messages++
	return l.State(), nil
}

func (w *bundleWriter) entry(tw *tar.Writer, name string, size int64, r io.Reader) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o640,
		ModTime: w.created, Format: tar.FormatUSTAR}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("airgap: export %s: %w", name, err)
	}
	if n, err := io.Copy(tw, r); err != nil || n != size {
		return fmt.Errorf("airgap: export %s: wrote %d of %d bytes: %v", name, n, size, err)
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
