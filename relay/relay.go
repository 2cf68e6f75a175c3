// Package relay chooses the upstream for each delivery attempt among the
// configured [[upstream]] tables: the ones meant for the message's sender,
// in the order of the file, moving on to the next when one cannot take the
// message (failover), and skipping for a while one that just failed at the
// connection level (hold-off), so that a dead primary does not cost every
// message a connect timeout.
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
	"log/slog"
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
	members []*member
	log     *slog.Logger
	now     func() time.Time
}

// member is an upstream with its hold-off state.
type member struct {
	Upstream
	mu    sync.Mutex
	down  time.Time // when it went down; zero while up
	until time.Time // not tried again before this
	hold  time.Duration
	last  error // the failure that put it on hold
}

// New returns a group trying ups in order.
func New(ups []Upstream, log *slog.Logger) *Group {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Group{log: log, now: time.Now}
	for _, u := range ups {
		g.members = append(g.members, &member{Upstream: u})
	}
	return g
}

// Deliver is Route without saying which upstream was used.
func (g *Group) Deliver(ctx context.Context, m *upstream.Message) ([]upstream.Result, error) {
	_, res, err := g.Route(ctx, m)
	return res, err
}

// Route makes one delivery attempt for m and returns the upstream that
// answered it, with its results or error as upstream.Client.Deliver
// returns them. When every upstream is on hold, nothing is tried and the
// error is a *DownError.
func (g *Group) Route(ctx context.Context, m *upstream.Message) (Via, []upstream.Result, error) {
	cands := g.members
	var (
		via     Via
		lastErr error
		held    *member
	)
	for i, u := range cands {
		if ok, until := u.usable(g.now()); !ok {
			if held == nil || until.Before(held.until) {
				held = u
			}
			continue
		}
		via = Via{Name: u.Name, Host: u.Host}
		res, err := u.Client.Deliver(ctx, m)
		if ctx.Err() != nil {
			// Shutting down: the failure says nothing about the upstream.
			return via, res, err
		}
		if err == nil || !failover(err) {
			g.ok(u)
			return via, res, err
		}
		if tripsHold(err) {
			g.fail(u, err)
		} else {
			g.ok(u)
		}
		lastErr = err
		if next := nextUsable(cands[i+1:], g.now()); next != nil {
			g.log.Warn("failover", "id", m.ID, "relay", u.Name, "next", next.Name, "reason", err.Error())
		}
	}
	switch {
	case lastErr != nil:
		return via, nil, lastErr
	case held == nil:
		return via, nil, errors.New("relay: no upstream")
	}
	return Via{Name: held.Name, Host: held.Host}, nil, held.downError()
}

func nextUsable(ms []*member, now time.Time) *member {
	for _, u := range ms {
		if ok, _ := u.usable(now); ok {
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

// usable reports whether u may be tried at now, and if not, until when it
// is on hold.
func (u *member) usable(now time.Time) (bool, time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.down.IsZero() || !now.Before(u.until), u.until
}

// fail puts u on hold after a connection-level failure: the hold doubles
// each time a retry fails too. Only the first failure is logged.
func (g *Group) fail(u *member, err error) {
	now := g.now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.down.IsZero() {
		u.down, u.hold = now, holdMin
		g.log.Warn("upstream down", "relay", u.Name, "reason", err.Error(), "hold", u.hold)
	} else if now.After(u.until) {
		u.hold = min(2*u.hold, holdMax)
	}
	u.until, u.last = now.Add(u.hold), err
}

// ok notes that u answered; if it was down, it is back.
func (g *Group) ok(u *member) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.down.IsZero() {
		g.log.Info("upstream up", "relay", u.Name, "down_for", g.now().Sub(u.down).Round(time.Second))
		u.down, u.until, u.hold, u.last = time.Time{}, time.Time{}, 0, nil
	}
}

func (u *member) downError() *DownError {
	u.mu.Lock()
	defer u.mu.Unlock()
	return &DownError{Relay: u.Name, Until: u.until, Last: u.last}
}

// DownError says that every upstream for a message is on hold after
// failing, so none was tried. It wraps the failure that put the one back
// soonest on hold, so errors.As finds its temporary *upstream.Error.
type DownError struct {
	Relay string
	Until time.Time
	Last  error
}

func (e *DownError) Error() string {
	return fmt.Sprintf("not tried: upstream %s is down until %s after: %v",
		e.Relay, e.Until.Format(time.TimeOnly), e.Last)
}

func (e *DownError) Unwrap() error { return e.Last }
