// Package metrics exposes Outbox's Prometheus metrics and health check over
// HTTP (the [metrics] address). It implements runner.Observer and counts
// what the listeners accept, so the packages that do the work need no
// metrics library. Every metric lives in the Metrics' own registry: no
// global state.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/outboxmta/outbox/spool"
)

// Delivery statuses, the status label of outbox_deliveries_total.
const (
	Delivered = "delivered"
	Deferred  = "deferred"
	Failed    = "failed"
)

// Metrics holds the daemon's metrics.
type Metrics struct {
	reg        *prometheus.Registry
	accepted   *prometheus.CounterVec
	deliveries *prometheus.CounterVec
	expired    prometheus.Counter
	bounces    prometheus.Counter
	latency    *prometheus.HistogramVec
	queue      *queueCollector
}

// New returns the metrics of a daemon with spool sp, whose upstreams are
// named relays (as the runner names them: their series exist, at zero,
// before their first delivery).
func New(sp *spool.Spool, relays []string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_messages_accepted_total",
			Help: "Messages queued, by origin: smtp (a listener), sendmail (the sendmail command through the daemon's socket), maildrop (the sendmail command's drop while the daemon was down).",
		}, []string{"origin"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_deliveries_total",
			Help: "Recipients tried, by upstream and outcome: delivered (2xx), deferred (4xx or no connection: retried), failed (5xx: permanent).",
		}, []string{"upstream", "status"}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_expired_recipients_total",
			Help: "Recipients failed for outliving the queue lifetime ([spool] lifetime).",
		}),
		bounces: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_bounces_total",
			Help: "Delivery status notifications (bounces) queued to senders.",
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "outbox_upstream_latency_seconds",
			Help: "Duration of delivery attempts, from connecting to the upstream to its reply to the message.",
			// From a reused local connection to a slow smarthost's
			// queue-before-reply; the RFC 5321 timeouts allow minutes.
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"upstream"}),
	}
	for _, origin := range []string{"smtp", "sendmail", "maildrop"} {
		m.accepted.WithLabelValues(origin)
	}
	for _, relay := range relays {
		for _, st := range []string{Delivered, Deferred, Failed} {
			m.deliveries.WithLabelValues(relay, st)
		}
		m.latency.WithLabelValues(relay)
	}
	m.queue = newQueueCollector(sp)
	m.reg.MustRegister(m.accepted, m.deliveries, m.expired, m.bounces, m.latency, m.queue,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Accepted counts a message queued from origin ("smtp", "sendmail",
// "maildrop").
func (m *Metrics) Accepted(origin string) { m.accepted.WithLabelValues(origin).Inc() }

// Attempted records one delivery attempt through relay (runner.Observer).
func (m *Metrics) Attempted(relay string, took time.Duration, delivered, deferred, failed int) {
	m.latency.WithLabelValues(relay).Observe(took.Seconds())
	m.deliveries.WithLabelValues(relay, Delivered).Add(float64(delivered))
	m.deliveries.WithLabelValues(relay, Deferred).Add(float64(deferred))
	m.deliveries.WithLabelValues(relay, Failed).Add(float64(failed))
}

// Expired counts recipients that outlived the queue lifetime
// (runner.Observer).
func (m *Metrics) Expired(recipients int) { m.expired.Add(float64(recipients)) }

// Bounced counts a bounce queued to a sender (runner.Observer).
func (m *Metrics) Bounced() { m.bounces.Inc() }
