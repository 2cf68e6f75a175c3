package runner

import (
	"context"

	"github.com/outboxmta/outbox/relay"
	"github.com/outboxmta/outbox/upstream"
)

// settings are what Reconfigure may replace while the runner runs. They are
// swapped whole; an attempt loads them once when it begins and uses that
// copy to the end, so an attempt never mixes two configurations.
type settings struct {
	up     Deliverer
	policy Policy
	relay  string // upstream name for logs
}

// Reconfigure replaces the upstream client, the retry policy and the
// upstream name used in logs (Options.Relay). It is safe to call while
// the runner runs: attempts in flight finish with the client and policy
// they began with; attempts that start afterwards use the new ones.
// Messages keep the due time already planned for them: a new retry policy
// decides the delay after their next failed attempt, and a new lifetime
// applies when their next attempt starts.
//
// A replaced client with a Close method (*upstream.Client) is closed: its
// idle connections get QUIT, and those of attempts in flight are closed
// when they finish.
func (r *Runner) Reconfigure(up Deliverer, p Policy, relay string) {
	old := r.cur.Swap(&settings{up: up, policy: p, relay: relay})
	if old != nil && old.up != up {
		go closeDeliverer(old.up)
	}
}

// Close closes the upstream client if it has a Close method; call it when
// the runner is done (after Run returned, or after Flush).
func (r *Runner) Close() {
	closeDeliverer(r.cur.Load().up)
}

func closeDeliverer(d Deliverer) {
	if c, ok := d.(interface{ Close() error }); ok {
		c.Close()
	}
}

// route makes one attempt through the configured upstream(s) and names
// the upstream that answered.
func (s *settings) route(ctx context.Context, m *upstream.Message) (relay.Via, []upstream.Result, error) {
	if rt, ok := s.up.(Router); ok {
		return rt.Route(ctx, m)
	}
	res, err := s.up.Deliver(ctx, m)
	return relay.Via{Name: s.relay}, res, err
}
