// Package logging builds Outbox's slog handlers: text lines on stderr, or
// native journal entries when stderr is connected to systemd's journal.
package logging

import (
	"io"
	"log/slog"
	"os"

	"github.com/coreos/go-systemd/v22/journal"
)

// New returns a handler for w at level: the journal's native protocol when
// w is the process's stderr and systemd connected that to the journal (as
// systemd documents: $JOURNAL_STREAM names stderr's device and inode), else
// text lines on w.
func New(w io.Writer, level slog.Leveler) slog.Handler {
	text := slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})
	if f, ok := w.(*os.File); ok && f == os.Stderr {
		if on, _ := journal.StderrIsJournalStream(); on {
			return NewJournal(journal.Send, level, text)
		}
	}
	return text
}
