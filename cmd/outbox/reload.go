package main

// Reloading the configuration on SIGHUP (systemctl reload: ExecReload=kill
// -HUP $MAINPID, or Type=notify-reload).
//
// The file is read again and checked as at start. An invalid file changes
// nothing: its errors are logged and the daemon goes on with the running
// configuration. A valid one is applied to what can change in place:
//
//   - listener options and per-endpoint policies (allow_networks, auth,
//     users files, certificates, limits, hostname, [aliases]), for
//     sessions that start from then on;
//   - the upstream client and the retry policy, for delivery attempts
//     that start from then on (attempts in flight finish with the old);
//   - [log] level and [spool] min_free.
//
// What needs a restart keeps its running value, with one warning line per
// changed key: a [[listener]] address added or removed, a listener's tls
// mode, [sendmail] socket and [spool] dir.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"

	"github.com/outboxmta/outbox/config"
	"github.com/outboxmta/outbox/listener"
	"github.com/outboxmta/outbox/runner"
	"github.com/outboxmta/outbox/spool"
)

// reloader applies the configuration file again on SIGHUP.
type reloader struct {
	path    string
	started *config.Config // as the daemon started: what needs a restart
	log     *slog.Logger
	level   *slog.LevelVar
	spool   *spool.Spool
	srv     *listener.Server
	runner  *runner.Runner
	notify  *notifier
}

// run reloads on every signal from hup until ctx is done.
func (rl *reloader) run(ctx context.Context, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			rl.reload()
		}
	}
}

// reload reads and applies the configuration file, reporting whether it
// did. Either all of it that can change is applied, or none.
func (rl *reloader) reload() bool {
	rl.notify.reloading()
	defer func() { rl.notify.ready(queueStatus(rl.runner)) }()
	rl.log.Info("SIGHUP: reloading the configuration", "file", rl.path)
	keep := func(errs ...error) bool {
		for _, err := range errs {
			rl.log.Error("configuration error", "err", err)
		}
		rl.log.Error("configuration not reloaded: keeping the running configuration", "file", rl.path)
		return false
	}
	cfg, err := config.Load(rl.path)
	if err != nil {
		return keep(errorList(err)...)
	}
	changes := restartOnly(rl.started, cfg)
	cfg.Spool.Dir = rl.started.Spool.Dir
	cfg.Sendmail.Socket = rl.started.Sendmail.Socket
	cfg.SetTraceAll(rl.started.TraceAll)

	// The listener reads certificates and users files: it goes first, so
	// that a file it cannot read leaves everything as it was.
	if err := rl.srv.Reconfigure(listenerOptions(cfg), endpoints(cfg)); err != nil {
		return keep(err)
	}
	for _, c := range changes {
		rl.log.Warn("configuration change needs a restart: keeping the running value",
			"key", c.key, "running", c.running, "new", c.new)
	}
	rl.level.Set(parseLevel(cfg.Log.Level))
	rl.spool.SetMinFree(int64(cfg.Spool.MinFree))
	warnUpstreams(cfg, rl.log)
	rl.runner.Reconfigure(newUpstream(cfg, rl.log), runnerPolicy(cfg), relayName(cfg))
	rl.log.Info("configuration reloaded", "file", rl.path)
	return true
}

// change is a setting that differs from the running one but needs a
// restart to apply.
type change struct {
	key          string
	running, new string
}

// restartOnly returns the settings of cfg that differ from the running
// configuration and that a reload cannot apply.
func restartOnly(running, cfg *config.Config) []change {
	var out []change
	if running.Spool.Dir != cfg.Spool.Dir {
		out = append(out, change{"spool.dir", running.Spool.Dir, cfg.Spool.Dir})
	}
	if running.Sendmail.Socket != cfg.Sendmail.Socket {
		out = append(out, change{"sendmail.socket", running.Sendmail.Socket, cfg.Sendmail.Socket})
	}
	if running.Metrics.Address != cfg.Metrics.Address {
		out = append(out, change{"metrics.address", running.Metrics.Address, cfg.Metrics.Address})
	}
	// Listeners are matched by address: reordering them changes nothing.
	find := func(ls []config.Listener, addr string) int {
		return slices.IndexFunc(ls, func(l config.Listener) bool { return l.Address == addr })
	}
	for i, l := range cfg.Listeners {
		j := find(running.Listeners, l.Address)
		if j < 0 {
			out = append(out, change{fmt.Sprintf("listener[%d].address", i), "(not served)", l.Address})
		} else if old := running.Listeners[j]; tlsMode(old) != tlsMode(l) {
			out = append(out, change{fmt.Sprintf("listener[%d].tls", i), tlsMode(old), tlsMode(l)})
		}
	}
	for i, l := range running.Listeners {
		if find(cfg.Listeners, l.Address) < 0 {
			out = append(out, change{fmt.Sprintf("listener[%d].address", i), l.Address, "(removed)"})
		}
	}
	return out
}

func tlsMode(l config.Listener) string {
	if l.TLS == "" {
		return "none"
	}
	return l.TLS
}

// errorList splits errors joined with errors.Join, as config.Load returns
// them, one per problem.
func errorList(err error) []error {
	var j interface{ Unwrap() []error }
	if errors.As(err, &j) {
		return j.Unwrap()
	}
	return []error{err}
}
