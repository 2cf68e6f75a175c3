package logging

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/outboxmta/outbox/internal/testutil"
)

type entry struct {
	msg  string
	prio journal.Priority
	vars map[string]string
}

func TestJournalEntry(t *testing.T) {
	var got []entry
	send := func(msg string, prio journal.Priority, vars map[string]string) error {
		got = append(got, entry{msg, prio, vars})
		return nil
	}
	var fallback testutil.SyncBuffer
	log := slog.New(NewJournal(send, slog.LevelInfo, slog.NewTextHandler(&fallback, nil)))

	log.Debug("below the level", "id", "X")
	log.Info("queued", "id", "0ABC", "from", "a@example.com", "size", 42, "nrcpt", 2)
	log.With("relay", "smtp.example.com:587").WithGroup("tls").Warn("deferred",
		"id", "0ABC", "reason", "451 4.3.0 try later", "delay", 1500*time.Millisecond,
		"at", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	log.Error("cannot move", "client-addr", "[::1]:25", slog.Group("peer", "uid", 0))

	want := []entry{
		{"queued id=0ABC from=a@example.com size=42 nrcpt=2", journal.PriInfo, map[string]string{
			"OUTBOX_ID": "0ABC", "OUTBOX_FROM": "a@example.com", "OUTBOX_SIZE": "42", "OUTBOX_NRCPT": "2"}},
		{`deferred relay=smtp.example.com:587 tls.id=0ABC tls.reason="451 4.3.0 try later" tls.delay=1.5s tls.at=2026-01-02T03:04:05.000Z`,
			journal.PriWarning, map[string]string{
				"OUTBOX_RELAY": "smtp.example.com:587", "OUTBOX_TLS_ID": "0ABC", "OUTBOX_TLS_REASON": "451 4.3.0 try later",
				"OUTBOX_TLS_DELAY": "1.5s", "OUTBOX_TLS_AT": "2026-01-02T03:04:05Z"}},
		{"cannot move client-addr=[::1]:25 peer.uid=0", journal.PriErr, map[string]string{
			"OUTBOX_CLIENT_ADDR": "[::1]:25", "OUTBOX_PEER_UID": "0"}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.msg != w.msg || g.prio != w.prio {
			t.Errorf("entry %d: MESSAGE %q PRIORITY %d, want %q %d", i, g.msg, g.prio, w.msg, w.prio)
		}
		w.vars["SYSLOG_IDENTIFIER"] = "outbox"
		for k, v := range w.vars {
			if g.vars[k] != v {
				t.Errorf("entry %d: %s=%q, want %q", i, k, g.vars[k], v)
			}
		}
		if len(g.vars) != len(w.vars) {
			t.Errorf("entry %d: fields %v, want %v", i, g.vars, w.vars)
		}
	}
	if fallback.String() != "" {
		t.Errorf("fallback written while the journal took everything: %s", fallback.String())
	}
}

// A record the journal refuses goes to the fallback, not nowhere.
func TestJournalFallback(t *testing.T) {
	send := func(string, journal.Priority, map[string]string) error { return errors.New("no journald") }
	var fallback testutil.SyncBuffer
	log := slog.New(NewJournal(send, slog.LevelInfo, slog.NewTextHandler(&fallback, nil)))
	log.With("id", "0ABC").Info("removed")
	if out := fallback.String(); !strings.Contains(out, "msg=removed id=0ABC") {
		t.Errorf("fallback got %q", out)
	}
}

// Handlers derived from one another share a buffer: concurrent use must
// not mix their messages (run with -race).
func TestJournalConcurrent(t *testing.T) {
	msgs := make(chan string, 200)
	send := func(msg string, _ journal.Priority, _ map[string]string) error { msgs <- msg; return nil }
	base := slog.New(NewJournal(send, slog.LevelInfo, slog.DiscardHandler))
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			log := base.With("g", g)
			for range 50 {
				log.Info("event", "n", g)
			}
			done <- struct{}{}
		}()
	}
	for range 4 {
		<-done
	}
	close(msgs)
	for m := range msgs {
		var g, n int
		if _, err := fmt.Sscanf(m, "event g=%d n=%d", &g, &n); err != nil || g != n {
			t.Fatalf("mixed message %q", m)
		}
	}
}
