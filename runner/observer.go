package runner

import (
	"time"

	"github.com/outboxmta/outbox/spool"
)

// Observer learns what the runner does, for metrics (package metrics
// implements it), so that this package needs no metrics library. Its
// methods are called from the delivery goroutines: they must be safe for
// concurrent use and must not block.
type Observer interface {
	// Accepted: a message dropped into incoming/ was taken into the queue.
	Accepted(origin string)
	// Attempted: one delivery attempt through relay ended after took,
	// with this many recipients delivered, deferred and failed.
	Attempted(relay string, took time.Duration, delivered, deferred, failed int)
	// Expired: this many recipients failed for outliving the queue lifetime.
	Expired(recipients int)
	// Bounced: a delivery status notification went into the queue.
	Bounced()
}

type nopObserver struct{}

func (nopObserver) Accepted(string)                                {}
func (nopObserver) Attempted(string, time.Duration, int, int, int) {}
func (nopObserver) Expired(int)                                    {}
func (nopObserver) Bounced()                                       {}

// observe tells the Observer how an attempt for the recipients tried went,
// from their status after it.
func (r *Runner) observe(relay string, took time.Duration, env *spool.Envelope, tried []string) {
	was := make(map[string]bool, len(tried))
	for _, a := range tried {
		was[a] = true
	}
	var delivered, deferred, failed int
	for _, rc := range env.Recipients {
		if !was[rc.Addr] {
			continue
		}
		switch rc.Status {
		case spool.Delivered:
			delivered++
		case spool.Failed:
			failed++
		default:
			deferred++
		}
	}
	r.opts.Observer.Attempted(relay, took, delivered, deferred, failed)
}
