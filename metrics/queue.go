package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxmta/outbox/spool"
)

// queueCollector reads the spool's directories at each scrape: the counts
// are then those on disk, whoever wrote them (the daemon, a sendmail drop,
// an administrator's `outbox queue hold`), and cost a directory read, no
// record read.
type queueCollector struct {
	sp       *spool.Spool
	now      func() time.Time
	messages *prometheus.Desc
	oldest   *prometheus.Desc
	errors   *prometheus.Desc
}

// queueStates are the states outbox_queue_messages reports.
var queueStates = []spool.State{spool.Queue, spool.Hold, spool.FailedQ, spool.Incoming}

func newQueueCollector(sp *spool.Spool) *queueCollector {
	return &queueCollector{
		sp:  sp,
		now: time.Now,
		messages: prometheus.NewDesc("outbox_queue_messages",
			"Messages in the spool, by state: queue (to deliver), hold, failed (dead letters), incoming (sendmail drops not yet taken in).",
			[]string{"state"}, nil),
		oldest: prometheus.NewDesc("outbox_queue_oldest_message_age_seconds",
			"Time since the oldest message in queue/ arrived (from its ID); 0 when the queue is empty.",
			nil, nil),
		errors: prometheus.NewDesc("outbox_queue_scrape_errors",
			"1 when a spool directory could not be read for this scrape.",
			nil, nil),
	}
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.messages
	ch <- c.oldest
	ch <- c.errors
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	failed := 0.0
	for _, st := range queueStates {
		n, oldest, err := c.sp.Count(st)
		if err != nil {
			failed = 1
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.messages, prometheus.GaugeValue, float64(n), string(st))
		if st == spool.Queue {
			age := 0.0
			if t, ok := spool.IDTime(oldest); ok {
				age = max(c.now().Sub(t).Seconds(), 0)
			}
			ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.errors, prometheus.GaugeValue, failed)
}
