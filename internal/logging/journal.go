package logging

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

// Identifier is the journal's SYSLOG_IDENTIFIER for Outbox's entries.
const Identifier = "outbox"

// Sender sends one journal entry; journal.Send is one.
type Sender func(message string, priority journal.Priority, vars map[string]string) error

// Journal is a slog handler writing native journal entries. MESSAGE is the
// event followed by its attributes as key=value, exactly as the text lines
// show them, so that `journalctl -u outbox | grep ID` finds every event of a
// message; each attribute is also a field of its own, OUTBOX_ and its key
// upper-cased ("id" → OUTBOX_ID, a group "g" with key "k" → OUTBOX_G_K), for
// `journalctl OUTBOX_ID=…`. PRIORITY follows the level, SYSLOG_IDENTIFIER
// is "outbox".
type Journal struct {
	send     Sender
	level    slog.Leveler
	fallback slog.Handler // takes records the journal refused
	text     slog.Handler // formats MESSAGE's attributes into shared.buf
	shared   *shared
	groups   []string
	fields   map[string]string // from WithAttrs
}

// shared is the buffer the text handlers of a Journal and the handlers
// derived from it format into, one record at a time.
type shared struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// NewJournal returns a handler sending through send the records at level
// or above; a record send fails on (journald stopped, say) goes to
// fallback instead, so it is not lost.
func NewJournal(send Sender, level slog.Leveler, fallback slog.Handler) *Journal {
	sh := &shared{}
	text := slog.NewTextHandler(&sh.buf, &slog.HandlerOptions{
		Level: slog.LevelDebug, // Enabled has decided already
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey) {
				return slog.Attr{} // the journal has its own; MESSAGE starts with the event
			}
			return a
		},
	})
	return &Journal{send: send, level: level, fallback: fallback, text: text, shared: sh}
}

func (j *Journal) Enabled(_ context.Context, l slog.Level) bool { return l >= j.level.Level() }

func (j *Journal) Handle(ctx context.Context, r slog.Record) error {
	vars := make(map[string]string, len(j.fields)+r.NumAttrs()+1)
	for k, v := range j.fields {
		vars[k] = v
	}
	r.Attrs(func(a slog.Attr) bool {
		addField(vars, j.groups, a)
		return true
	})
	vars["SYSLOG_IDENTIFIER"] = Identifier

	j.shared.mu.Lock()
	j.shared.buf.Reset()
	err := j.text.Handle(ctx, r)
	attrs := strings.TrimSuffix(j.shared.buf.String(), "\n")
	j.shared.mu.Unlock()
	if err != nil {
		return err
	}
	msg := r.Message
	if attrs != "" {
		msg += " " + attrs
	}
	if err := j.send(msg, priority(r.Level), vars); err != nil {
		return j.fallback.Handle(ctx, r)
	}
	return nil
}

func (j *Journal) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return j
	}
	c := *j
	c.fields = make(map[string]string, len(j.fields)+len(attrs))
	for k, v := range j.fields {
		c.fields[k] = v
	}
	for _, a := range attrs {
		addField(c.fields, j.groups, a)
	}
	c.text = j.text.WithAttrs(attrs)
	c.fallback = j.fallback.WithAttrs(attrs)
	return &c
}

func (j *Journal) WithGroup(name string) slog.Handler {
	if name == "" {
		return j
	}
	c := *j
	c.groups = append(append([]string(nil), j.groups...), name)
	c.text = j.text.WithGroup(name)
	c.fallback = j.fallback.WithGroup(name)
	return &c
}

// priority maps a slog level to syslog's.
func priority(l slog.Level) journal.Priority {
	switch {
	case l < slog.LevelInfo:
		return journal.PriDebug
	case l < slog.LevelWarn:
		return journal.PriInfo
	case l < slog.LevelError:
		return journal.PriWarning
	}
	return journal.PriErr
}

// addField adds attribute a, under groups, to vars as OUTBOX_GROUP_KEY.
func addField(vars map[string]string, groups []string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		if a.Key != "" {
			groups = append(append([]string(nil), groups...), a.Key)
		}
		for _, g := range v.Group() {
			addField(vars, groups, g)
		}
		return
	}
	if a.Key == "" {
		return
	}
	vars[fieldName(groups, a.Key)] = fieldValue(v)
}

// fieldName is "OUTBOX_" and the key path upper-cased, with every byte a
// journal field name may not contain as "_".
func fieldName(groups []string, key string) string {
	var b strings.Builder
	b.WriteString("OUTBOX")
	for _, part := range slices.Concat(groups, []string{key}) {
		b.WriteByte('_')
		for i := 0; i < len(part); i++ {
			c := part[i]
			switch {
			case 'a' <= c && c <= 'z':
				c -= 'a' - 'A'
			case 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			default:
				c = '_'
			}
			b.WriteByte(c)
		}
	}
	return b.String()
}

func fieldValue(v slog.Value) string {
	if v.Kind() == slog.KindTime {
		return v.Time().Format(time.RFC3339Nano)
	}
	return v.String()
}
