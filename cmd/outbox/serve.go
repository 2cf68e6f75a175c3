package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/outboxmta/outbox/config"
	"github.com/outboxmta/outbox/internal/address"
	"github.com/outboxmta/outbox/listener"
	"github.com/outboxmta/outbox/runner"
	"github.com/outboxmta/outbox/spool"
	"github.com/outboxmta/outbox/upstream"
)

func serveMain(ctx context.Context, args []string, e env) error {
	fs, path := flags("serve", e)
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", pos[0])}
	}
	cfg, err := loadConfig(*path, e)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP would end the daemon by default; until reloading exists, say
	// so instead of dying.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			fmt.Fprintln(e.stderr, "outbox serve: SIGHUP: configuration reload is not supported yet; restart the service to apply changes")
		}
	}()
	return serve(ctx, cfg, e)
}

// newRunner returns the queue runner for cfg: the daemon's, or a
// foreground flush's.
func newRunner(cfg *config.Config, sp *spool.Spool, log *slog.Logger) *runner.Runner {
	up := cfg.Upstreams[0]
	return runner.New(sp, upstream.New(up, cfg.Hostname, log), runner.Policy{
		RetryMin: cfg.Spool.RetryMin.Duration,
		RetryMax: cfg.Spool.RetryMax.Duration,
		Lifetime: cfg.Spool.Lifetime.Duration,
	}, runner.Options{Relay: up.Address()}, log)
}

func aliases(cfg *config.Config) address.Aliases {
	return address.NewAliases(cfg.Aliases, cfg.Domain, cfg.Hostname)
}

// serve runs the daemon until ctx is done.
func serve(ctx context.Context, cfg *config.Config, e env) error {
	log := newLogger(e.stderr, cfg.Log.Level)
	sp, err := spool.Open(cfg.Spool.Dir, log)
	if err != nil {
		return err
	}
	sp.SetMinFree(int64(cfg.Spool.MinFree))
	if len(cfg.Upstreams) > 1 {
		log.Warn("only the first [[upstream]] is used for now; failover comes later", "using", cfg.Upstreams[0].Address())
	}
	up := cfg.Upstreams[0]
	r := newRunner(cfg, sp, log)

	srv := listener.New(sp, listenerOptions(cfg),
		func(env *spool.Envelope) { r.Enqueue(env.ID, env.NextAttempt) }, log)

	// Open every socket before serving any, so a busy port fails the start
	// instead of leaving a half-working daemon.
	endpoints := endpoints(cfg)
	var sockets []net.Listener
	defer func() {
		for _, l := range sockets {
			l.Close()
		}
	}()
	for _, ep := range endpoints {
		l, err := listener.Listen(ep)
		if err != nil {
			return err
		}
		sockets = append(sockets, l)
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan error, len(endpoints)+1)
	for i, ep := range endpoints {
		go func() { done <- srv.Serve(ctx, sockets[i], ep) }()
	}
	go func() { done <- r.Run(ctx) }()
	daemon.SdNotify(false, daemon.SdNotifyReady)
	log.Info("outbox started", "version", version, "spool", cfg.Spool.Dir, "upstream", up.Address())

	var first error
	for range len(endpoints) + 1 {
		err := <-done
		if err != nil && first == nil {
			first = err
			log.Error("stopping", "err", err)
			cancel(err)
		}
		if ctx.Err() != nil {
			daemon.SdNotify(false, daemon.SdNotifyStopping)
		}
	}
	log.Info("outbox stopped")
	if first != nil && !errors.Is(first, context.Canceled) {
		return first
	}
	return nil
}
