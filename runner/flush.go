package runner

import (
	"context"
	"sort"
	"sync"

	"github.com/outboxmta/outbox/spool"
)

// Flushed is the outcome of one message in a Flush.
type Flushed struct {
	ID      string `json:"id"`
	Outcome string `json:"outcome"`
}

// Flush attempts delivery of the given queued messages now, or of every
// message in the queue (and in incoming/) when ids is empty, whatever their
// schedule says. It
// is `outbox queue flush` and `sendmail -q`: it may run beside the daemon,
// since a message being delivered by one runner is skipped by the other.
func (r *Runner) Flush(ctx context.Context, ids []string) ([]Flushed, error) {
	if len(ids) == 0 {
		if err := r.acceptIncoming(); err != nil {
			return nil, err
		}
		err := r.spool.Scan(spool.Queue, func(env *spool.Envelope) error {
			ids = append(ids, env.ID)
			return nil
		})
		if err != nil {
			return nil, err
		}
		sort.Strings(ids)
	}
	out := make([]Flushed, len(ids))
	sem := make(chan struct{}, r.opts.Workers)
	var wg sync.WaitGroup
	for i, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_, outcome := r.attempt(ctx, id, true)
			out[i] = Flushed{ID: id, Outcome: outcome}
		})
	}
	wg.Wait()
	return out, nil
}
