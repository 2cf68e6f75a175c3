package runner

import (
	"math/rand/v2"
	"time"

	"github.com/outboxmta/outbox/bounce"
)

// Policy is when to retry, when to give up, and whom to tell.
type Policy struct {
	RetryMin time.Duration // delay after the first failed attempt
	RetryMax time.Duration // the delay doubles up to this
	Lifetime time.Duration // after this in the queue, a message fails
	// Bounce, if set, is how failed messages are reported to their
	// senders; nil: they only go to failed/.
	Bounce *bounce.Options
}

// Backoff returns the delay after the given number of failed attempts
// (1 or more): RetryMin doubled per attempt up to RetryMax, plus up to a
// quarter more at random so that messages deferred together by one outage
// do not all come back at the same moment.
func (p Policy) Backoff(attempts int) time.Duration {
	d := p.RetryMin
	for i := 1; i < attempts && d < p.RetryMax; i++ {
		d *= 2
	}
	d = min(d, p.RetryMax)
	if q := int64(d / 4); q > 0 {
		d += time.Duration(rand.Int64N(q))
	}
	return min(d, p.RetryMax+p.RetryMax/4)
}
