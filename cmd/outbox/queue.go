package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
	"time"

	"github.com/outboxmta/outbox/spool"
)

const queueUsage = "usage: outbox queue list|show|flush|hold|release|delete|requeue|export|import|ack [--json] [ID...]"

func queueMain(ctx context.Context, args []string, e env) error {
	if len(args) == 0 {
		return usageError{queueUsage}
	}
	switch args[0] {
	case "export", "import", "ack":
		return airgapMain(ctx, args, e)
	}
	fs, path := flags("queue "+args[0], e)
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	failed := fs.Bool("failed", false, "list: show the dead letters in failed/ instead")
	ids, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	cfg, err := loadConfig(*path, e)
	if err != nil {
		return err
	}
	sp, err := spool.Open(cfg.Spool.Dir, nil)
	if err != nil {
		return err
	}
	switch args[0] {
	case "list":
		states := []spool.State{spool.Queue, spool.Hold, spool.Incoming, spool.Exported}
		if *failed {
			states = []spool.State{spool.FailedQ}
		}
		entries, err := listQueue(sp, states...)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(e.stdout, entries)
		}
		writeMailq(e.stdout, entries)
		return nil
	case "show":
		if len(ids) != 1 {
			return usageError{"usage: outbox queue show [--json] ID"}
		}
		return showMessage(e.stdout, sp, ids[0], *asJSON)
	case "flush":
		log := newLogger(e.stderr, cfg.Log.Level)
		r := newRunner(cfg, sp, 0, nil, log)
		res, err := r.Flush(ctx, ids)
		r.Close()
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(e.stdout, res)
		}
		for _, f := range res {
			fmt.Fprintf(e.stdout, "%s: %s\n", f.ID, f.Outcome)
		}
		return nil
	case "hold", "release", "delete", "requeue":
		if len(ids) == 0 {
			return usageError{fmt.Sprintf("usage: outbox queue %s ID...", args[0])}
		}
		return eachID(e, ids, adminOps(sp)[args[0]])
	}
	return usageError{fmt.Sprintf("unknown queue subcommand %q; %s", args[0], queueUsage)}
}

// adminOps are the queue commands that change one message each.
func adminOps(sp *spool.Spool) map[string]func(id string) (string, error) {
	return map[string]func(string) (string, error){
		"hold":    func(id string) (string, error) { return "held", sp.Hold(id) },
		"release": func(id string) (string, error) { return "released", sp.Release(id) },
		"delete":  func(id string) (string, error) { return "deleted", sp.Delete(id) },
		"requeue": func(id string) (string, error) { return "requeued", sp.Requeue(id, time.Now()) },
	}
}

// eachID applies op to every ID, reporting each, and fails if any failed.
func eachID(e env, ids []string, op func(string) (string, error)) error {
	failed := 0
	for _, id := range ids {
		done, err := op(id)
		switch {
		case errors.Is(err, spool.ErrLocked):
			fmt.Fprintf(e.stderr, "%s: being delivered right now; try again in a moment\n", id)
		case errors.Is(err, fs.ErrNotExist):
			fmt.Fprintf(e.stderr, "%s: no such message here\n", id)
		case err != nil:
			fmt.Fprintf(e.stderr, "%s: %v\n", id, err)
		default:
			fmt.Fprintf(e.stdout, "%s: %s\n", id, done)
			continue
		}
		failed++
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d messages not changed", failed, len(ids))
	}
	return nil
}

// queueEntry is one message as listed.
type queueEntry struct {
	State string `json:"state"`
	*spool.Envelope
}

// listQueue returns the messages in the given states, oldest first.
func listQueue(sp *spool.Spool, states ...spool.State) ([]queueEntry, error) {
	var out []queueEntry
	for _, st := range states {
		err := sp.Scan(st, func(env *spool.Envelope) error {
			out = append(out, queueEntry{State: string(st), Envelope: env})
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeMailq prints entries in Postfix's mailq layout, which admins and
// their scripts know: "!" marks held mail, "*" mail being delivered is not
// shown separately here. "@" marks mail exported to an air-gap bundle and
// waiting for its acknowledgement.
func writeMailq(w io.Writer, entries []queueEntry) {
	if len(entries) == 0 {
		fmt.Fprintln(w, "Mail queue is empty")
		return
	}
	fmt.Fprintln(w, "-Queue ID-       --Size-- ----Arrival Time---- -Sender/Recipient-------")
	var total int64
	for _, q := range entries {
		mark := " "
		switch q.State {
		case string(spool.Hold):
			mark = "!"
		case string(spool.Exported):
			mark = "@"
		}
		from := q.From
		if from == "" {
			from = "MAILER-DAEMON"
		}
		fmt.Fprintf(w, "%s%s %8d %s  %s\n", q.ID, mark, q.Size, q.Arrived.Local().Format("Mon Jan _2 15:04:05"), from)
		shown := map[string]bool{}
		for _, r := range q.Recipients {
			if r.Status == spool.Delivered {
				continue
			}
			if r.Reply != "" && !shown[r.Reply] {
				shown[r.Reply] = true
				fmt.Fprintf(w, "%49s(%s)\n", "", oneLine(r.Reply))
			}
			fmt.Fprintf(w, "%49s%s\n", "", r.Addr)
		}
		fmt.Fprintln(w)
		total += q.Size
	}
	req := "Requests"
	if len(entries) == 1 {
		req = "Request"
	}
	fmt.Fprintf(w, "-- %d Kbytes in %d %s.\n", (total+1023)/1024, len(entries), req)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func showMessage(w io.Writer, sp *spool.Spool, id string, asJSON bool) error {
	for _, st := range []spool.State{spool.Queue, spool.Hold, spool.FailedQ, spool.Incoming, spool.Exported} {
		env, body, err := sp.Read(st, id)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return err
		}
		if asJSON {
			return writeJSON(w, struct {
				State string `json:"state"`
				*spool.Envelope
				Message string `json:"message"`
			}{string(st), env, string(body)})
		}
		fmt.Fprintf(w, "*** ENVELOPE RECORDS %s (%s) ***\n", id, st)
		if err := writeJSON(w, env); err != nil {
			return err
		}
		fmt.Fprintf(w, "*** MESSAGE CONTENTS %s ***\n", id)
		_, err = w.Write(body)
		return err
	}
	return fmt.Errorf("%s: no such message", id)
}

func mailqMain(args []string, e env) int {
	return exitCode(e, "mailq", queueMain(context.Background(), append([]string{"list"}, args...), e))
}
