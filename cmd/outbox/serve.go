package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/outboxmta/outbox/bounce"
	"github.com/outboxmta/outbox/config"
	"github.com/outboxmta/outbox/internal/address"
	"github.com/outboxmta/outbox/listener"
	"github.com/outboxmta/outbox/oauth"
	"github.com/outboxmta/outbox/relay"
	"github.com/outboxmta/outbox/runner"
	"github.com/outboxmta/outbox/spool"
	"github.com/outboxmta/outbox/upstream"
)

func serveMain(ctx context.Context, args []string, e env) error {
	// Take the signals before anything else: SIGHUP's default action would
	// end the daemon.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	fs, path := flags("serve", e)
	trace := fs.Bool("trace", false, "log the SMTP dialogue with every upstream (secrets and message data left out)")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", pos[0])}
	}
	cfg, err := loadConfig(*path, e)
	if err != nil {
		return err
	}
	cfg.SetTraceAll(*trace)
	return serve(ctx, cfg, e, hup)
}

// newUpstream returns what delivers for the runner: every [[upstream]],
// chosen by sender and tried in order with failover (relay.Group); with
// none (an air-gapped relay whose mail leaves by export), one that defers.
func newUpstream(cfg *config.Config, log *slog.Logger) runner.Deliverer {
	if len(cfg.Upstreams) == 0 {
		return noUpstream{}
	}
	ups := make([]relay.Upstream, len(cfg.Upstreams))
	for i, u := range cfg.Upstreams {
		ups[i] = relay.Upstream{Name: u.Name, Host: u.Host, Senders: u.Senders,
			Client: newClient(u, cfg.Hostname, log)}
	}
	return relay.New(ups, log)
}

// newClient returns the client for the upstream u, with its OAuth2 token
// source when it has an [upstream.oauth2] table.
func newClient(u config.Upstream, hello string, log *slog.Logger) *upstream.Client {
	c := upstream.New(u, hello, log)
	if u.OAuth2.Enabled() {
		c.Tokens = oauth.New(u, log)
	}
	return c
}

// relayName names the upstream in use for logs.
func relayName(cfg *config.Config) string {
	if len(cfg.Upstreams) == 0 {
		return "none"
	}
	return cfg.Upstreams[0].Address()
}

// runnerPolicy returns the [spool] retry settings and how to bounce.
func runnerPolicy(cfg *config.Config) runner.Policy {
	return runner.Policy{
		RetryMin: cfg.Spool.RetryMin.Duration,
		RetryMax: cfg.Spool.RetryMax.Duration,
		Lifetime: cfg.Spool.Lifetime.Duration,
		Bounce: &bounce.Options{
			Hostname:     cfg.Hostname,
			Postmaster:   postmaster(cfg),
			LocalDomains: []string{cfg.Domain, cfg.Hostname},
			Aliases:      aliases(cfg),
		},
	}
}

// postmaster returns where bounces for local senders go: the postmaster
// key, else the alias of postmaster or root, else postmaster@domain.
func postmaster(cfg *config.Config) []string {
	if cfg.Postmaster != "" {
		return []string{cfg.Postmaster}
	}
	al := aliases(cfg)
	for _, name := range []string{"postmaster", "root"} {
		if t := al.Expand(name); len(t) != 1 || t[0] != name {
			return t
		}
	}
	return []string{"postmaster@" + cfg.Domain}
}

// newRunner returns the queue runner for cfg: the daemon's, whose loop
// wakes at least every heartbeat and which tells obs (metrics, or nil) what
// it does, or a foreground flush's (heartbeat 0, obs nil).
func newRunner(cfg *config.Config, sp *spool.Spool, heartbeat time.Duration, obs runner.Observer, log *slog.Logger) *runner.Runner {
	return runner.New(sp, newUpstream(cfg, log), runnerPolicy(cfg),
		runner.Options{Relay: relayName(cfg), Heartbeat: heartbeat, Observer: obs}, log)
}

func aliases(cfg *config.Config) address.Aliases {
	return address.NewAliases(cfg.Aliases, cfg.Domain, cfg.Hostname)
}

// serve runs the daemon until ctx is done, reloading the configuration
// whenever hup receives.
//
// Shutdown (ctx done: SIGTERM or SIGINT) tells systemd STOPPING=1, closes
// the sockets, lets SMTP sessions in progress finish for up to 10 seconds
// while ending idle ones with 421 (listener/drain.go), and waits for the delivery
// attempts in flight, which are cut short and their outcome recorded. It
// returns nil, exit status 0, unless a part of the daemon failed or was
// still running stopLimit after shutdown began (parts.go).
func serve(ctx context.Context, cfg *config.Config, e env, hup <-chan os.Signal) error {
	log, level := newLevelLogger(e.stderr, cfg.Log.Level)
	sp, err := spool.Open(cfg.Spool.Dir, log)
	if err != nil {
		return err
	}
	sp.SetMinFree(int64(cfg.Spool.MinFree))
	warnUpstreams(cfg, log)
	ag, err := newAirgapDaemon(cfg, sp, log)
	if err != nil {
		return err
	}

	// With the systemd watchdog on, the runner's loop wakes often enough
	// for Alive to tell idle from stuck.
	wd := watchdogInterval(log)
	mx := newMetrics(cfg, sp)
	r := newRunner(cfg, sp, heartbeat(wd, mx != nil), mx.observer(), log)

	srv := listener.New(sp, listenerOptions(cfg), func(env *spool.Envelope) {
		r.Enqueue(env.ID, env.NextAttempt)
		mx.accepted(env.Origin.Kind)
	}, log)
	// Every endpoint's policy is in place before any Serve begins: each
	// Serve adds its own to the server's table, and those updates must not
	// race to replace one another. This also finds unreadable certificate
	// and users files before any socket is open.
	eps := endpoints(cfg)
	if err := srv.Reconfigure(listenerOptions(cfg), eps); err != nil {
		return err
	}

	// Take the sockets systemd passed and open the others, all before
	// serving any, so a busy port fails the start instead of leaving a
	// half-working daemon.
	sockets, err := openSockets(eps, log)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range sockets {
			s.l.Close()
		}
	}()
	if err := mx.listen(); err != nil {
		return err
	}
	defer mx.close()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	notify := newNotifier(log)
	// STOPPING=1 once, as shutdown begins: on a signal, or when a part of
	// the daemon failed. The deferred call makes sure it is out before the
	// process exits.
	context.AfterFunc(ctx, notify.stop)
	defer notify.stop()

	ps := newParts(ctx, cancel)
	for _, s := range sockets {
		ps.start("listener "+s.ep.Address, func(ctx context.Context) error { return srv.Serve(ctx, s.l, s.ep) })
	}
	ps.start("queue runner", r.Run)
	if mx != nil {
		ps.start("metrics", func(ctx context.Context) error { return mx.serve(ctx, r, log) })
	}
	ag.start(ctx, r)
	notify.ready(queueStatus(r))
	go notify.reportStatus(ctx, r)
	if wd > 0 {
		go watchdog(ctx, wd, r.Alive, func() { notify.send("WATCHDOG=1") }, log)
	}
	rl := &reloader{path: cfg.Path, started: cfg, log: log, level: level,
		spool: sp, srv: srv, runner: r, notify: notify}
	go rl.run(ctx, hup)
	log.Info("outbox started", "version", version, "spool", cfg.Spool.Dir, "upstream", relayName(cfg))

	err = ps.wait(stopLimit, log)
	r.Close() // QUIT on the upstream connections kept open
	log.Info("outbox stopped")
	return err
}

// warnUpstreams logs the order in which the upstreams are tried, at start
// and at every reload, so that the log says where mail goes.
func warnUpstreams(cfg *config.Config, log *slog.Logger) {
	if len(cfg.Upstreams) < 2 {
		return
	}
	var order []string
	for _, u := range cfg.Upstreams {
		o := u.Name + "=" + u.Address()
		if len(u.Senders) > 0 {
			o += "(" + strings.Join(u.Senders, ",") + ")"
		}
		order = append(order, o)
	}
	log.Info("upstreams, tried in order", "upstreams", strings.Join(order, " "))
}
