package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/outboxmta/outbox/config"
	"github.com/outboxmta/outbox/metrics"
	"github.com/outboxmta/outbox/runner"
	"github.com/outboxmta/outbox/spool"
)

// daemonMetrics is the [metrics] listener with its metrics; nil when
// [metrics] address is unset, and then every method does nothing.
type daemonMetrics struct {
	*metrics.Metrics
	address string
	l       net.Listener
}

func newMetrics(cfg *config.Config, sp *spool.Spool) *daemonMetrics {
	if cfg.Metrics.Address == "" {
		return nil
	}
	var relays []string
	for _, u := range cfg.Upstreams {
		relays = append(relays, u.Address())
	}
	return &daemonMetrics{Metrics: metrics.New(sp, relays), address: cfg.Metrics.Address}
}

// healthHeartbeat is how often an idle queue runner's loop wakes when
// /healthz watches it, and healthWindow how long /healthz waits for a sign
// of life before it answers 503.
const (
	healthHeartbeat = 10 * time.Second
	healthWindow    = 3 * healthHeartbeat
)

// heartbeat returns the runner's heartbeat: a quarter of the systemd
// watchdog interval wd, and no longer than healthHeartbeat when /healthz
// is served; 0 (none) with neither.
func heartbeat(wd time.Duration, health bool) time.Duration {
	hb := wd / 4
	if health && (hb == 0 || hb > healthHeartbeat) {
		hb = healthHeartbeat
	}
	return hb
}

func (m *daemonMetrics) observer() runner.Observer {
	if m == nil {
		return nil
	}
	return m.Metrics
}

func (m *daemonMetrics) accepted(origin string) {
	if m != nil {
		m.Accepted(origin)
	}
}

// listen opens the metrics address, before the daemon says it is ready,
// so that a busy port fails the start.
func (m *daemonMetrics) listen() error {
	if m == nil {
		return nil
	}
	l, err := net.Listen("tcp", m.address)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	m.l = l
	return nil
}

func (m *daemonMetrics) close() {
	if m != nil && m.l != nil {
		m.l.Close()
	}
}

// serve serves /metrics and /healthz until ctx is done; /healthz watches r.
func (m *daemonMetrics) serve(ctx context.Context, r *runner.Runner, log *slog.Logger) error {
	log.Info("serving metrics", "address", m.l.Addr().String())
	return metrics.Serve(ctx, m.l, m.Handler(func() bool { return r.Alive(healthWindow) }))
}
