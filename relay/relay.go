// Package relay chooses the upstream for each delivery attempt among the
// configured [[upstream]] tables: the ones meant for the message's sender
// (`senders`: an address beats its domain; no match, and the null sender,
// take the upstreams without senders), in the order of the file, moving
// on to the next when one cannot take the message (failover), and
// skipping for a while one that just failed at the connection level
// (hold-off), so that a dead primary does not cost every message a
// connect timeout. Mail for reserved upstreams never falls back to the
// others: they carry another account.
//
// Failover happens within one attempt and only when the upstream gave no
// recipient an answer of its own: upstream.Client.Deliver then returns a
// temporary *upstream.Error (connect, TLS, greeting, EHLO, AUTH, a 4xx to
// MAIL, a 421 at any point, a connection lost before DATA), and no
// recipient can have been delivered. Once recipients have their own
// replies, the attempt ends there: a recipient deferred by one upstream is
// retried later, never handed to another in the same attempt, so no
// message is sent twice. A permanent failure (a 5xx to MAIL) is final too.
package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/outboxmta/outbox/upstream"
)

// Deliverer makes one delivery attempt through one upstream;
// *upstream.Client is one.
type Deliverer interface {
	Deliver(ctx context.Context, m *upstream.Message) ([]upstream.Result, error)
}

// Upstream is one member of a Group.
type Upstream struct {
	Name   string // config name, for logs ("relay")
	Host   string // what the DSN names as Remote-MTA
	Client Deliverer
	// Senders reserves the upstream for these envelope senders: domains
	// ("example.org" or "@example.org") or whole addresses. Empty: for
	// every sender no other upstream is reserved for.
	Senders []string
}

// Via names the upstream that answered an attempt.
type Via struct {
	Name string
	Host string
}

// Hold-off after a connection-level failure: it starts short so that a
// blip costs little, and doubles while the upstream stays down so that a
// long outage is probed only every few minutes.
const (
	holdMin = 30 * time.Second
	holdMax = 5 * time.Minute
)

// Group delivers through the first usable upstream of a list. It is safe
// for concurrent use.
type Group struct {
	all      []*member            // in file order
	defaults []*member            // upstreams without senders
	byAddr   map[string][]*member // lower-case sender address: its upstreams
	byDomain map[string][]*member // lower-case sender domain: its upstreams
	log      *slog.Logger
	now      func() time.Time
}

// member is an upstream with its hold-off state.
type member struct {
	Upstream
	mu    sync.Mutex
	down  time.Time // when it went down; zero while up
	until time.Time // not tried again before this
	hold  time.Duration
}

// New returns a group trying ups in order: for each message, those
// reserved for its sender, else those without senders.
func New(ups []Upstream, log *slog.Logger) *Group {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Group{log: log, now: time.Now, byAddr: map[string][]*member{}, byDomain: map[string][]*member{}}
	for _, u := range ups {
		m := &member{Upstream: u}
		g.all = append(g.all, m)
		if len(u.Senders) == 0 {
			g.defaults = append(g.defaults, m)
		}
		for _, s := range u.Senders {
			s = strings.ToLower(s)
			table := g.byAddr
			if i := strings.IndexByte(s, '@'); i <= 0 {
				table, s = g.byDomain, s[i+1:]
			}
			if !slices.Contains(table[s], m) {
				table[s] = append(table[s], m)
			}
		}
	}
	return g
}

// Close closes the clients that can be closed (*upstream.Client: QUIT on
// its idle connections); the runner calls it when it replaces the group.
func (g *Group) Close() error {
	var errs []error
	for _, m := range g.all {
		if c, ok := m.Client.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// candidates returns the upstreams for mail from sender, in order: those
// listing the address, else those listing its domain, else the defaults.
// The null sender (bounces) takes the defaults.
func (g *Group) candidates(sender string) []*member {
	sender = strings.ToLower(sender)
	if ms, ok := g.byAddr[sender]; ok {
		return ms
	}
	if i := strings.LastIndexByte(sender, '@'); i >= 0 {
		if ms, ok := g.byDomain[sender[i+1:]]; ok {
			return ms
		}
	}
	return g.defaults
}

// Deliver is Route without saying which upstream was used.
func (g *Group) Deliver(ctx context.Context, m *upstream.Message) ([]upstream.Result, error) {
	_, res, err := g.Route(ctx, m)
	return res, err
}

// Route makes one delivery attempt for m and returns the upstream that
// answered it, with its results or error as upstream.Client.Deliver
// returns them. Upstreams on hold are skipped, unless all of the
// message's upstreams are: then the one whose hold ends first is tried
// anyway, since skipping it would only defer the message.
func (g *Group) Route(ctx context.Context, m *upstream.Message) (Via, []upstream.Result, error) {
	cands := g.candidates(m.From)
	if len(cands) == 0 {
		return Via{}, nil, fmt.Errorf("relay: no upstream for sender <%s>", m.From)
	}
	var (
		via     Via
		lastErr error
		tried   bool
	)
	for i, u := range cands {
		if !u.usable(g.now()) {
			continue
		}
		tried = true
		via = Via{Name: u.Name, Host: u.Host}
		res, next, err := g.try(ctx, u, m)
		if !next {
			return via, res, err
		}
		lastErr = err
		if n := nextUsable(cands[i+1:], g.now()); n != nil {
			g.log.Warn("failover", "id", m.ID, "relay", u.Name, "next", n.Name, "reason", err.Error())
		}
	}
	if tried {
		return via, nil, lastErr
	}
	u := soonest(cands)
	res, _, err := g.try(ctx, u, m)
	return Via{Name: u.Name, Host: u.Host}, res, err
}

// try makes the attempt through u and notes how u did. next says whether
// the message may go on to the next upstream.
func (g *Group) try(ctx context.Context, u *member, m *upstream.Message) (res []upstream.Result, next bool, err error) {
	res, err = u.Client.Deliver(ctx, m)
	switch {
	case ctx.Err() != nil:
		// Shutting down: the failure says nothing about the upstream.
		return res, false, err
	case err == nil || !failover(err):
		g.ok(u)
		return res, false, err
	case tripsHold(err):
		g.fail(u, err)
	default:
		g.ok(u)
	}
	return res, true, err
}

// soonest returns the member whose hold ends first.
func soonest(ms []*member) *member {
	best, bestUntil := ms[0], ms[0].holdEnd()
	for _, u := range ms[1:] {
		if t := u.holdEnd(); t.Before(bestUntil) {
			best, bestUntil = u, t
		}
	}
	return best
}

func nextUsable(ms []*member, now time.Time) *member {
	for _, u := range ms {
		if u.usable(now) {
			return u
		}
	}
	return nil
}

// failover reports whether err leaves the message for the next upstream:
// the attempt failed as a whole, and not for good.
func failover(err error) bool {
	var ue *upstream.Error
	return !errors.As(err, &ue) || ue.Temporary
}

// tripsHold reports whether err says the upstream itself is unusable (and
// not merely unwilling to take this message now: a 4xx to MAIL FROM).
func tripsHold(err error) bool {
	var ue *upstream.Error
	if errors.As(err, &ue) && ue.Op == "mail" && ue.Code/100 == 4 && ue.Code != 421 {
		return false
	}
	return true
}

// usable reports whether u is not on hold at now.
func (u *member) usable(now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.down.IsZero() || !now.Before(u.until)
}

func (u *member) holdEnd() time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.until
}

// fail puts u on hold after a connection-level failure: the hold doubles
// each time a retry fails too. Only the first failure is logged.
//
// Refused credentials are the exception: the client holds those itself
// and retries AUTH once a minute, which is what it logs and what the
// sysadmin fixing a password waits for. A longer hold here would stretch
// that, so theirs is always the shortest.
func (g *Group) fail(u *member, err error) {
	now := g.now()
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case u.down.IsZero():
		u.down, u.hold = now, holdMin
		g.log.Warn("upstream down", "relay", u.Name, "reason", err.Error(), "hold", u.hold)
	case upstream.AuthRefused(err):
		u.hold = holdMin
	case now.After(u.until):
		u.hold = min(2*u.hold, holdMax)
	}
	u.until = now.Add(u.hold)
}

// ok notes that u answered; if it was down, it is back.
func (g *Group) ok(u *member) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.down.IsZero() {
		g.log.Info("upstream up", "relay", u.Name, "down_for", g.now().Sub(u.down).Round(time.Second))
		u.down, u.until, u.hold = time.Time{}, time.Time{}, 0
	}
}
