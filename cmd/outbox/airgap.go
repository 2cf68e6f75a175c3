package main

// outbox queue export, import and ack: mail across an air gap in bundle
// files (package airgap).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/outboxmta/outbox/airgap"
	"github.com/outboxmta/outbox/config"
	"github.com/outboxmta/outbox/runner"
	"github.com/outboxmta/outbox/spool"
	"github.com/outboxmta/outbox/upstream"
	"golang.org/x/sys/unix"
)

const (
	exportUsage = "usage: outbox queue export (--all [--again] | ID...) --to FILE [--json]"
	importUsage = "usage: outbox queue import [--ack FILE] [--json] FILE"
	ackUsage    = "usage: outbox queue ack FILE"
)

// dataError is input that cannot be used, such as a damaged bundle: exit
// status 65 (EX_DATAERR).
type dataError struct{ err error }

func (d dataError) Error() string { return d.err.Error() }
func (d dataError) Unwrap() error { return d.err }

// asDataError marks the errors of refused bundles and acknowledgements.
func asDataError(err error) error {
	if errors.Is(err, airgap.ErrRefused) {
		return dataError{err}
	}
	return err
}

func airgapMain(ctx context.Context, args []string, e env) error {
	fs, path := flags("queue "+args[0], e)
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	var all, again *bool
	var to, ack *string
	switch args[0] {
	case "export":
		all = fs.Bool("all", false, "export every message in the queue")
		again = fs.Bool("again", false, "with --all: also what was exported before and not acknowledged")
		to = fs.String("to", "", "the bundle `file` to write (never replaced)")
	case "import":
		ack = fs.String("ack", "", "where to write the acknowledgement (default: beside the bundle, .ack)")
	}
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	cfg, err := loadConfig(*path, e)
	if err != nil {
		return err
	}
	o, err := airgapOptions(cfg, newLogger(e.stderr, "warn"))
	if err != nil {
		return err
	}
	sp, err := spool.Open(cfg.Spool.Dir, nil)
	if err != nil {
		return err
	}
	switch args[0] {
	case "export":
		if *to == "" || *all == (len(pos) > 0) || *again && !*all {
			return usageError{exportUsage}
		}
		return exportCmd(ctx, e, sp, o, pos, *all, *again, *to, *asJSON)
	case "import":
		if len(pos) != 1 {
			return usageError{importUsage}
		}
		return importCmd(ctx, e, sp, o, pos[0], *ack, *asJSON)
	default:
		if len(pos) != 1 {
			return usageError{ackUsage}
		}
		return ackCmd(e, sp, o, pos[0])
	}
}

// airgapOptions reads the [airgap] keys and returns what export and import
// need; a key that cannot be read is a configuration error.
func airgapOptions(cfg *config.Config, log *slog.Logger) (airgap.Options, error) {
	keys, err := airgap.LoadKeys(cfg.Airgap.SigningKeyFile, cfg.Airgap.TrustedKeys)
	if err != nil {
		return airgap.Options{}, configError{err}
	}
	return airgap.Options{Host: cfg.Hostname, Keys: keys, Log: log,
		// A day past the lifetime: a bundle carried back and forth for
		// longer than the queue would keep its mail is rare enough.
		Keep: cfg.Spool.Lifetime.Duration + 24*time.Hour}, nil
}

func exportCmd(ctx context.Context, e env, sp *spool.Spool, o airgap.Options, ids []string, all, again bool, to string, asJSON bool) error {
	if all {
		var err error
		if ids, err = airgap.Select(sp, again); err != nil {
			return err
		}
	} else {
		for _, id := range ids {
			if st, err := sp.Find(id); err != nil {
				return err
			} else if st != spool.Queue && st != spool.Exported {
				return fmt.Errorf("%s is in %s/; only queued or exported mail is exported", id, st)
			}
		}
	}
	p := newProgress(e, "exporting")
	o.Progress = p.update
	res, err := airgap.Export(ctx, sp, ids, to, o)
	p.done()
	if errors.Is(err, airgap.ErrNothing) {
		fmt.Fprintln(e.stderr, "outbox queue export: nothing to export; no file written")
		return nil
	}
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(e.stdout, res)
	}
	fmt.Fprintf(e.stdout, "exported %d messages to %s (bundle %s, %d bytes)", res.Messages, res.File, res.Bundle, res.Bytes)
	if res.Skipped > 0 {
		fmt.Fprintf(e.stdout, "; %d skipped (being delivered or gone; export them again later)", res.Skipped)
	}
	fmt.Fprintln(e.stdout)
	return nil
}

// ackPath is where an import writes its acknowledgement by default: beside
// the bundle.
func ackPath(bundle string) string {
	return strings.TrimSuffix(bundle, filepath.Ext(bundle)) + ".ack"
}

func importCmd(ctx context.Context, e env, sp *spool.Spool, o airgap.Options, file, ack string, asJSON bool) error {
	if ack == "" {
		ack = ackPath(file)
	}
	// Find out before queueing anything whether the acknowledgement can
	// be written.
	if err := canCreate(filepath.Dir(ack)); err != nil {
		return fmt.Errorf("cannot write the acknowledgement %s: %w (choose another place with --ack)", ack, err)
	}
	p := newProgress(e, "importing")
	o.Progress = p.update
	res, err := airgap.Import(ctx, sp, file, o)
	p.done()
	if err != nil {
		return asDataError(err)
	}
	if err := airgap.AckFor(res, o.Host, time.Now()).Write(ack, o.Keys); err != nil {
		return fmt.Errorf("%d messages queued, but %w; importing the bundle again writes it and queues nothing twice", res.Queued, err)
	}
	if asJSON {
		return writeJSON(e.stdout, struct {
			*airgap.ImportResult
			Ack string `json:"ack"`
		}{res, ack})
	}
	fmt.Fprintf(e.stdout, "imported bundle %s from %s: %d messages, %d queued, %d imported before; acknowledgement %s\n",
		res.Bundle, res.Source, res.Messages, res.Queued, res.Duplicates, ack)
	return nil
}

func canCreate(dir string) error {
	f, err := os.CreateTemp(dir, ".outbox-ack-check-")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

func ackCmd(e env, sp *spool.Spool, o airgap.Options, file string) error {
	a, err := airgap.ReadAck(file, o.Keys)
	if err != nil {
		return asDataError(err)
	}
	removed, err := a.Apply(sp, o.Host)
	if err != nil {
		return asDataError(err)
	}
	fmt.Fprintf(e.stdout, "bundle %s acknowledged by %s: %d messages deleted from exported/", a.Bundle, a.Importer, len(removed))
	if n := len(a.IDs) - len(removed); n > 0 {
		fmt.Fprintf(e.stdout, ", %d not in exported/ (acknowledged before or requeued)", n)
	}
	fmt.Fprintln(e.stdout)
	return nil
}

// progress draws a one-line progress report on a terminal, a few times a
// second; elsewhere it does nothing.
type progress struct {
	w    io.Writer
	verb string
	last time.Time
	line bool
}

func newProgress(e env, verb string) *progress {
	p := &progress{verb: verb}
	if f, ok := e.stderr.(*os.File); ok && isTerminal(f) {
		p.w = f
	}
	return p
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func (p *progress) update(pr airgap.Progress) {
	if p.w == nil || time.Since(p.last) < 200*time.Millisecond {
		return
	}
	p.last, p.line = time.Now(), true
	switch {
	case pr.Total > 0:
		fmt.Fprintf(p.w, "\r%s: %d/%d messages, %.1f MB ", p.verb, pr.Messages, pr.Total, float64(pr.Bytes)/1e6)
	case pr.TotalBytes > 0:
		fmt.Fprintf(p.w, "\r%s: %d messages, %.0f%% ", p.verb, pr.Messages, 100*float64(pr.Bytes)/float64(pr.TotalBytes))
	}
}

func (p *progress) done() {
	if p.line {
		fmt.Fprintln(p.w)
	}
}

// noUpstream is the deliverer of a relay without [[upstream]]: its mail
// waits in the queue for the next export.
type noUpstream struct{}

func (noUpstream) Deliver(context.Context, *upstream.Message) ([]upstream.Result, error) {
	return nil, errors.New("no [[upstream]]: this relay's mail leaves by air-gap export ([airgap] export_dir)")
}

// airgapDaemon is the daemon's part in crossing the gap: it follows the
// import journal, so that mail `outbox queue import` queued is delivered at
// once, and runs the export_dir and import_dir loops when configured.
// Changes to [airgap] take effect at restart.
type airgapDaemon struct {
	cfg  config.Airgap
	sp   *spool.Spool
	opts airgap.Options
	log  *slog.Logger
}

// newAirgapDaemon reads the keys and makes the directories, so that a
// mistake stops the start rather than the first bundle.
func newAirgapDaemon(cfg *config.Config, sp *spool.Spool, log *slog.Logger) (*airgapDaemon, error) {
	o, err := airgapOptions(cfg, log)
	if err != nil {
		return nil, err
	}
	a := &airgapDaemon{cfg: cfg.Airgap, sp: sp, opts: o, log: log}
	for _, dir := range []string{a.cfg.ExportDir, a.cfg.ImportDir, a.cfg.AckDir} {
		if dir == "" {
			continue
		}
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, configError{fmt.Errorf("airgap: %w", err)}
		}
	}
	if d := a.cfg.ImportDir; d != "" {
		for _, sub := range []string{"done", "refused"} {
			if err := os.MkdirAll(filepath.Join(d, sub), 0o750); err != nil {
				return nil, configError{fmt.Errorf("airgap: %w", err)}
			}
		}
	}
	return a, nil
}

func (a *airgapDaemon) start(ctx context.Context, r *runner.Runner) {
	w := airgap.WatchImports(a.sp.Root())
	go every(ctx, 2*time.Second, func(context.Context) { w.Poll(func(id string) { r.Enqueue(id, time.Now()) }) })
	if a.cfg.ExportDir != "" {
		go every(ctx, a.cfg.ExportInterval.Duration, a.export)
	}
	if a.cfg.ImportDir != "" {
		seen := map[string]fileState{}
		go every(ctx, a.cfg.ImportInterval.Duration, func(ctx context.Context) { a.importDir(ctx, seen) })
	}
}

// every calls fn every d until ctx is done.
func every(ctx context.Context, d time.Duration, fn func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn(ctx)
		}
	}
}

// export writes everything in the queue that is not being delivered into
// a new bundle in export_dir.
func (a *airgapDaemon) export(ctx context.Context) {
	ids, err := airgap.Select(a.sp, false)
	if err != nil || len(ids) == 0 {
		if err != nil {
			a.log.Error("air-gap export failed", "err", err)
		}
		return
	}
	o := a.opts
	o.BundleID = spool.NewID(time.Now())
	file := filepath.Join(a.cfg.ExportDir, fmt.Sprintf("%s-%s.bundle", o.Host, o.BundleID))
	if _, err := airgap.Export(ctx, a.sp, ids, file, o); err != nil && !errors.Is(err, airgap.ErrNothing) && ctx.Err() == nil {
		a.log.Error("air-gap export failed", "file", file, "err", err)
	}
}

// fileState is what the import loop saw of a file at its last poll.
type fileState struct {
	size  int64
	mtime time.Time
}

// importDir imports the bundles in import_dir that have stopped changing
// since the last poll: a diode or a copy may still be writing the others.
func (a *airgapDaemon) importDir(ctx context.Context, seen map[string]fileState) {
	entries, err := os.ReadDir(a.cfg.ImportDir)
	if err != nil {
		a.log.Error("cannot read import_dir", "dir", a.cfg.ImportDir, "err", err)
		return
	}
	now := map[string]fileState{}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".part") || strings.HasSuffix(name, ".tmp") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		st := fileState{fi.Size(), fi.ModTime()}
		now[name] = st
		if prev, ok := seen[name]; !ok || prev != st {
			continue
		}
		if ctx.Err() != nil {
			return
		}
		a.importFile(ctx, name)
	}
	clear(seen)
	maps.Copy(seen, now)
}

// importFile imports one bundle, writes its acknowledgement and moves it to
// done/, or to refused/ with a .reason file beside it. Any other trouble
// (the spool's) leaves it in place for the next poll. An acknowledgement
// (*.ack, coming back over a return link to the isolated side) is applied
// as `outbox queue ack` would, and moved aside the same way.
func (a *airgapDaemon) importFile(ctx context.Context, name string) {
	file := filepath.Join(a.cfg.ImportDir, name)
	if strings.HasSuffix(name, ".ack") {
		a.applyAck(file)
		return
	}
	res, err := airgap.Import(ctx, a.sp, file, a.opts)
	switch {
	case errors.Is(err, airgap.ErrRefused):
		a.refuse(file, "refused bundle", err)
		return
	case err != nil:
		if ctx.Err() == nil {
			a.log.Error("cannot import bundle; will try again", "file", file, "err", err)
		}
		return
	}
	ack := filepath.Join(a.cfg.AckDir, ackPath(name))
	if err := airgap.AckFor(res, a.opts.Host, time.Now()).Write(ack, a.opts.Keys); err != nil {
		// Importing again queues nothing twice and writes the ack.
		a.log.Error("cannot write acknowledgement; will import again", "file", file, "err", err)
		return
	}
	a.moveAside(file, "done")
}

// applyAck deletes the exported messages the acknowledgement file names.
// Removing them is idempotent, so trouble with the spool leaves the file
// for the next poll.
func (a *airgapDaemon) applyAck(file string) {
	ack, err := airgap.ReadAck(file, a.opts.Keys)
	var removed []string
	if err == nil {
		removed, err = ack.Apply(a.sp, a.opts.Host)
	}
	switch {
	case errors.Is(err, airgap.ErrRefused):
		a.refuse(file, "refused acknowledgement", err)
		return
	case err != nil:
		a.log.Error("cannot apply acknowledgement; will try again", "file", file, "err", err)
		return
	}
	a.log.Info("acknowledgement applied", "bundle", ack.Bundle, "importer", ack.Importer,
		"deleted", len(removed), "not_exported", len(ack.IDs)-len(removed))
	a.moveAside(file, "done")
}

// refuse logs why file was refused and moves it to refused/ with a
// .reason file beside it.
func (a *airgapDaemon) refuse(file, what string, err error) {
	a.log.Error(what, "file", file, "reason", err)
	to := a.moveAside(file, "refused")
	os.WriteFile(to+".reason", []byte(err.Error()+"\n"), 0o640)
}

// moveAside moves file into the subdirectory sub of its directory, under
// a new name if the old one is taken, and returns where it went.
func (a *airgapDaemon) moveAside(file, sub string) string {
	to := filepath.Join(filepath.Dir(file), sub, filepath.Base(file))
	if _, err := os.Lstat(to); err == nil {
		to += "." + spool.NewID(time.Now())
	}
	if err := os.Rename(file, to); err != nil {
		a.log.Error("cannot move bundle aside", "file", file, "to", to, "err", err)
	}
	return to
}
