package airgap

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/outboxmta/outbox/internal/safeio"
)

// The import journal, SPOOL/airgap/journal, remembers every message ever
// imported, one line each:
//
//	TIME SOURCE SOURCE-ID LOCAL-ID BUNDLE
//
// (TIME in RFC 3339 with nanoseconds, SOURCE the exporting host, SOURCE-ID
// the message's queue ID there, LOCAL-ID its queue ID here). An import
// skips a message whose SOURCE and SOURCE-ID are in it, so the same or an
// overlapping bundle queues each message once. Lines older than the
// retention (at least the queue lifetime) are pruned when an import opens
// the journal. Imports take SPOOL/airgap/lock for their whole run, so two
// of them (the daemon's import_dir and a command) never interleave.

const (
	journalName = "journal"
	lockName    = "lock"
)

func airgapDir(spoolRoot string) string { return filepath.Join(spoolRoot, "airgap") }

type journalEntry struct {
	at                     time.Time
	source, srcID, localID string
	bundle                 string
}

func (e journalEntry) line() string {
	return fmt.Sprintf("%s %s %s %s %s\n", e.at.UTC().Format(time.RFC3339Nano), e.source, e.srcID, e.localID, e.bundle)
}

func parseJournalLine(line string) (journalEntry, bool) {
	f := strings.Fields(line)
	if len(f) != 5 {
		return journalEntry{}, false
	}
	at, err := time.Parse(time.RFC3339Nano, f[0])
	if err != nil {
		return journalEntry{}, false
	}
	return journalEntry{at: at, source: f[1], srcID: f[2], localID: f[3], bundle: f[4]}, true
}

type journal struct {
	path string
	lock *os.File
	seen map[string]bool // source + " " + source ID
}

// openJournal takes the import lock (waiting for another import to
// finish) and loads the journal, pruning lines older than keep.
func openJournal(ctx context.Context, spoolRoot string, now time.Time, keep time.Duration) (*journal, error) {
	dir := airgapDir(spoolRoot)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("airgap: journal: %w", err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("airgap: journal: %w", err)
	}
	for {
		err = unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EWOULDBLOCK {
			break
		}
		select {
		case <-ctx.Done():
			lf.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		lf.Close()
		return nil, fmt.Errorf("airgap: journal lock: %w", err)
	}
	if keep <= 0 {
		keep = 30 * 24 * time.Hour
	}
	j := &journal{path: filepath.Join(dir, journalName), lock: lf, seen: map[string]bool{}}
	if err := j.load(now.Add(-keep)); err != nil {
		lf.Close()
		return nil, err
	}
	return j, nil
}

func (j *journal) load(cutoff time.Time) error {
	b, err := os.ReadFile(j.path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("airgap: journal: %w", err)
	}
	var kept bytes.Buffer
	// A torn last line (a crash while appending, before the import
	// reported success) is dropped by rewriting the journal.
	rewrite := len(b) > 0 && b[len(b)-1] != '\n'
	for len(b) > 0 {
		line, rest, _ := bytes.Cut(b, []byte("\n"))
		b = rest
		e, ok := parseJournalLine(string(line))
		if !ok || e.at.Before(cutoff) {
			rewrite = true
			continue
		}
		j.seen[e.source+" "+e.srcID] = true
		kept.Write(line)
		kept.WriteByte('\n')
	}
	if !rewrite {
		return nil
	}
	if err := safeio.WriteFile(j.path, kept.Bytes(), 0o640, nil); err != nil {
		return fmt.Errorf("airgap: journal: %w", err)
	}
	return nil
}

func (j *journal) has(source, id string) bool { return j.seen[source+" "+id] }

// append adds entries and returns once they are on disk. It ends the
// import: has does not see them.
func (j *journal) append(entries []journalEntry) error {
	if len(entries) == 0 {
		return nil
	}
	_, statErr := os.Stat(j.path)
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("airgap: journal: %w", err)
	}
	w := bufio.NewWriter(f)
	for _, e := range entries {
		w.WriteString(e.line())
	}
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && statErr != nil {
		err = safeio.SyncDir(filepath.Dir(j.path))
	}
	if err != nil {
		return fmt.Errorf("airgap: journal: %w", err)
	}
	return nil
}

func (j *journal) close() { j.lock.Close() }

// ImportWatcher follows the import journal: Poll calls fn with the local
// queue ID of every message imported, by any process, since the watcher
// was made or last polled. It is how the daemon learns at once of mail
// `outbox queue import` queued, instead of at its next rescan.
type ImportWatcher struct{ t *tailer }

// WatchImports starts following the import journal of the spool at
// spoolRoot.
func WatchImports(spoolRoot string) *ImportWatcher {
	t := &tailer{path: filepath.Join(airgapDir(spoolRoot), journalName), since: time.Now()}
	t.skipExisting()
	return &ImportWatcher{t}
}

// Poll reads the journal's new lines.
func (w *ImportWatcher) Poll(fn func(id string)) { w.t.poll(fn) }

// tailer follows the journal across appends and rewrites.
type tailer struct {
	path  string
	ino   uint64
	off   int64
	since time.Time // after a rewrite, only lines newer than this are new
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

func (t *tailer) skipExisting() {
	if fi, err := os.Stat(t.path); err == nil {
		t.ino, t.off = inode(fi), fi.Size()
	}
}

func (t *tailer) poll(fn func(id string)) {
	f, err := os.Open(t.path)
	if err != nil {
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return
	}
	filter := false
	if inode(fi) != t.ino || fi.Size() < t.off {
		t.ino, t.off, filter = inode(fi), 0, true
	}
	if fi.Size() == t.off {
		return
	}
	b, err := io.ReadAll(io.NewSectionReader(f, t.off, fi.Size()-t.off))
	if err != nil {
		return
	}
	end := bytes.LastIndexByte(b, '\n') + 1 // whole lines only
	t.off += int64(end)
	since := t.since
	for _, line := range strings.Split(string(b[:end]), "\n") {
		e, ok := parseJournalLine(line)
		if !ok || filter && !e.at.After(since) {
			continue
		}
		if e.at.After(t.since) {
			t.since = e.at
		}
		fn(e.localID)
	}
}
