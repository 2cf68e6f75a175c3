// Package runner delivers queued mail: it keeps a schedule of when each
// message in the spool is due, hands due messages to the upstream client,
// records each recipient's result in the spool, and retries with backoff
// until every recipient is delivered, fails permanently, or the message
// outlives the queue lifetime.
package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outboxmta/outbox/bounce"
	"github.com/outboxmta/outbox/relay"
	"github.com/outboxmta/outbox/spool"
	"github.com/outboxmta/outbox/upstream"
)

// Deliverer makes one delivery attempt; *upstream.Client is one.
type Deliverer interface {
	Deliver(ctx context.Context, m *upstream.Message) ([]upstream.Result, error)
}

// Router is a Deliverer that picks one of several upstreams for each
// attempt and says which (*relay.Group). The runner logs that name, and
// not Options.Relay, for a Router's attempts.
type Router interface {
	Route(ctx context.Context, m *upstream.Message) (relay.Via, []upstream.Result, error)
}

// Options tunes a Runner; zero values take the defaults.
type Options struct {
	Workers int           // concurrent delivery attempts; default 4
	Rescan  time.Duration // how often queue/ and incoming/ are read again; default 1m
	Relay   string        // upstream name for logs
	// Heartbeat, if set, is the longest the loop sleeps, so that Alive
	// can tell a quiet runner from a stuck one (the daemon sets it for the
	// systemd watchdog). Zero: the loop sleeps until there is work.
	Heartbeat time.Duration
	// Observer, if set, is told about accepted drops, delivery attempts
	// and expiries (for metrics).
	Observer Observer
}

// Runner is the background queue runner.
type Runner struct {
	spool   *spool.Spool
	cur     atomic.Pointer[settings] // swapped by Reconfigure
	opts    Options
	log     *slog.Logger
	now     func() time.Time
	wake    chan struct{}
	mu      sync.Mutex
	sched   *schedule
	running sync.WaitGroup

	// Liveness for Alive: the monotonic time since born of the loop's
	// last iteration or the last record a scan went through.
	born time.Time
	beat atomic.Int64
}

// New returns a runner for the spool s delivering through up.
func New(s *spool.Spool, up Deliverer, p Policy, opts Options, log *slog.Logger) *Runner {
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.Rescan <= 0 {
		opts.Rescan = time.Minute
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	r := &Runner{
		spool: s, opts: opts, log: log,
		now:   time.Now,
		wake:  make(chan struct{}, 1),
		sched: newSchedule(),
		born:  time.Now(),
	}
	r.Reconfigure(up, p, opts.Relay)
	return r
}

// Enqueue tells the runner about a message just committed to queue/.
func (r *Runner) Enqueue(id string, due time.Time) {
	r.mu.Lock()
	r.sched.add(id, due)
	r.mu.Unlock()
	r.poke()
}

func (r *Runner) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Alive reports whether the runner has shown signs of life within the last
// d: an iteration of its loop, or progress through a scan of the spool. A
// runner whose loop is blocked (a hung disk, a deadlock) stops being alive;
// one that is merely idle stays alive as long as Options.Heartbeat is set
// and shorter than d. A runner not yet started counts from New.
func (r *Runner) Alive(d time.Duration) bool {
	return time.Since(r.born)-time.Duration(r.beat.Load()) <= d
}

// alive records a sign of life for Alive.
func (r *Runner) alive() { r.beat.Store(int64(time.Since(r.born))) }

// Queued returns how many messages the runner knows in the queue, and how
// many of them are being delivered right now.
func (r *Runner) Queued() (messages, delivering int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sched.len(), len(r.sched.inflight)
}

// Run delivers until ctx is done, then waits for attempts in flight to
// finish (they are cut short by ctx, and their outcome is recorded).
func (r *Runner) Run(ctx context.Context) error {
	if err := r.rescan(); err != nil {
		return err
	}
	r.log.Info("queue runner started", "queued", r.queued())
	defer r.running.Wait()

	rescan := time.NewTicker(r.opts.Rescan)
	defer rescan.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		r.alive()
		wait := r.dispatch(ctx)
		if hb := r.opts.Heartbeat; hb > 0 && wait > hb {
			wait = hb
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-timer.C:
		case <-rescan.C:
			if err := r.rescan(); err != nil {
				r.log.Error("queue rescan failed", "err", err)
			}
		}
	}
}

// dispatch starts every due attempt there is a worker for and returns how
// long to sleep until the next one is due.
func (r *Runner) dispatch(ctx context.Context) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		e, ok := r.sched.next()
		if !ok {
			return time.Hour
		}
		if wait := e.due.Sub(r.now()); wait > 0 {
			return wait
		}
		if len(r.sched.inflight) >= r.opts.Workers {
			return time.Hour // an attempt finishing pokes us
		}
		id := r.sched.take()
		r.running.Add(1)
		go func() {
			defer r.running.Done()
			next, _ := r.attempt(ctx, id, false)
			r.mu.Lock()
			r.sched.finish(id, next)
			r.mu.Unlock()
			r.poke()
		}()
	}
}

func (r *Runner) queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sched.len()
}

// rescan takes in mail dropped into incoming/ and plans every record of
// queue/ not yet known: records written by other processes and, at start,
// everything left from before a restart.
func (r *Runner) rescan() error {
	if err := r.acceptIncoming(); err != nil {
		return err
	}
	known := func(id string) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.sched.known(id)
	}
	return r.spool.ScanExcept(spool.Queue, known, func(env *spool.Envelope) error {
		r.alive()
		r.mu.Lock()
		if !r.sched.known(env.ID) {
			r.sched.add(env.ID, env.NextAttempt)
		}
		r.mu.Unlock()
		return nil
	})
}

// acceptIncoming moves whole, valid drops from incoming/ into the queue.
func (r *Runner) acceptIncoming() error {
	return r.spool.Scan(spool.Incoming, func(env *spool.Envelope) error {
		r.alive()
		if err := r.spool.Accept(env.ID); err != nil {
			r.log.Error("cannot accept dropped message", "id", env.ID, "err", err)
			return nil
		}
		r.opts.Observer.Accepted(env.Origin.Kind)
		r.log.Info("queued", "id", env.ID, "from", env.From, "size", env.Size,
			"nrcpt", len(env.Recipients), "origin", env.Origin.Kind, env.Origin.UIDAttr())
		return nil
	})
}

// attempt delivers id once and returns when it is due again (the zero time
// when it left the queue or is not ours to plan) and a few words on the
// outcome. Unless force, a message whose record says it is not due yet (a
// foreground flush deferred it meanwhile) is left alone. The whole attempt
// uses the upstream client and policy in force when it began.
func (r *Runner) attempt(ctx context.Context, id string, force bool) (time.Time, string) {
	cur := r.cur.Load()
	l, err := r.spool.Lock(id)
	switch {
	case errors.Is(err, spool.ErrLocked):
		return r.now().Add(cur.policy.RetryMin), "busy: another runner is delivering it"
	case errors.Is(err, fs.ErrNotExist):
		return time.Time{}, "not in the queue"
	case errors.Is(err, spool.ErrCorrupt):
		return time.Time{}, "corrupt: moved to corrupt/"
	case err != nil:
		r.log.Error("cannot open queued message", "id", id, "err", err)
		return r.now().Add(cur.policy.RetryMin), err.Error()
	}
	defer l.Close()
	env := l.Envelope()
	if !force && env.NextAttempt.After(r.now().Add(time.Second)) {
		return env.NextAttempt, "not due"
	}
	if r.now().Sub(env.Since()) > cur.policy.Lifetime {
		r.expire(l)
	}
	if !env.Done() { // done already: only its bounce is still to be queued
		r.deliver(ctx, cur, l)
	}
	return r.finish(cur, l)
}

// deliver makes one attempt for the pending recipients and records the
// outcome in the envelope (not yet on disk).
func (r *Runner) deliver(ctx context.Context, cur *settings, l *spool.Locked) {
	env := l.Envelope()
	msg := &upstream.Message{
		ID: env.ID, From: env.From, Recipients: env.Pending(),
		Body: l.Body(), Size: env.Size, UTF8: env.UTF8, EightBit: env.EightBit,
		DSNRet: env.DSNRet, EnvID: env.EnvID, DSN: pendingDSN(env),
	}
	start := r.now()
	via, results, err := cur.route(ctx, msg)
	now := r.now()
	defer r.observe(via.Name, now.Sub(start), env, msg.Recipients)
	env.Attempts++
	if err != nil {
		var ue *upstream.Error
		temporary := !errors.As(err, &ue) || ue.Temporary
		env.LastError = err.Error()
		for i := range env.Recipients {
			rc := &env.Recipients[i]
			if rc.Status != spool.Pending {
				continue
			}
			rc.Reply, rc.Updated, rc.Remote = env.LastError, now, ""
			if ue != nil && ue.Code != 0 {
				rc.Remote = via.Host
			}
			if !temporary {
				rc.Status = spool.Failed
				r.log.Warn("failed", "id", env.ID, "to", rc.Addr, "relay", via.Name, "reply", rc.Reply)
			}
		}
		if temporary {
			r.log.Warn("deferred", "id", env.ID, "relay", via.Name, "nrcpt", len(msg.Recipients),
				"attempts", env.Attempts, "reason", env.LastError)
		}
		return
	}
	byAddr := make(map[string]upstream.Result, len(results))
	for _, res := range results {
		byAddr[res.Recipient] = res
	}
	env.LastError = ""
	for i := range env.Recipients {
		rc := &env.Recipients[i]
		res, ok := byAddr[rc.Addr]
		if rc.Status != spool.Pending || !ok {
			continue
		}
		rc.Reply, rc.Updated, rc.Remote = reply(res), now, ""
		if res.Code != 0 {
			rc.Remote = via.Host
		}
		attrs := []any{"id", env.ID, "to", rc.Addr, "relay", via.Name, "reply", rc.Reply}
		switch res.Status {
		case upstream.Delivered:
			rc.Status = spool.Delivered
			r.log.Info("delivered", append(attrs, "delay", now.Sub(env.Arrived).Round(time.Millisecond),
				"attempt_time", now.Sub(start).Round(time.Millisecond))...)
		case upstream.Failed:
			rc.Status = spool.Failed
			r.log.Warn("failed", attrs...)
		default:
			env.LastError = rc.Reply
			r.log.Warn("deferred", append(attrs, "attempts", env.Attempts)...)
		}
	}
}

// pendingDSN returns the DSN parameters of the pending recipients, in the
// order of env.Pending().
func pendingDSN(env *spool.Envelope) []upstream.RecipientDSN {
	var out []upstream.RecipientDSN
	for _, rc := range env.Recipients {
		if rc.Status == spool.Pending {
			out = append(out, upstream.RecipientDSN{Notify: rc.DSNNotify, Orcpt: rc.DSNOrcpt})
		}
	}
	return out
}

func reply(res upstream.Result) string {
	switch {
	case res.Code == 0:
		return res.Text
	case res.Enhanced == "":
		return fmt.Sprintf("%d %s", res.Code, res.Text)
	default:
		return fmt.Sprintf("%d %s %s", res.Code, res.Enhanced, res.Text)
	}
}

// finish persists the attempt's outcome and returns when the message is due
// again, and the outcome in a few words.
func (r *Runner) finish(cur *settings, l *spool.Locked) (time.Time, string) {
	env := l.Envelope()
	if env.Done() {
		if failed := countFailed(env); failed > 0 {
			return r.fail(cur, l, failed)
		}
		if err := l.Remove(); err != nil {
			r.log.Error("cannot remove delivered message", "id", env.ID, "err", err)
			return r.now().Add(cur.policy.RetryMin), err.Error()
		}
		r.log.Info("removed", "id", env.ID)
		return time.Time{}, "delivered"
	}
	env.NextAttempt = r.now().Add(cur.policy.Backoff(env.Attempts))
	if err := l.Update(); err != nil {
		// The old record still stands: the attempt is repeated later, and
		// recipients already delivered may get a duplicate (at least once).
		r.log.Error("cannot record delivery attempt", "id", env.ID, "err", err)
	}
	r.log.Info("next attempt", "id", env.ID, "at", env.NextAttempt.Format(time.RFC3339),
		"pending", len(env.Pending()))
	return env.NextAttempt, fmt.Sprintf("deferred until %s: %s", env.NextAttempt.Format(time.DateTime), env.LastError)
}

func countFailed(env *spool.Envelope) int {
	n := 0
	for _, rc := range env.Recipients {
		if rc.Status == spool.Failed {
			n++
		}
	}
	return n
}

// fail queues the bounce for a message whose recipients are all done, some
// failed, and moves the message to failed/, where it stays for the
// administrator. The bounce is durable before the move, so a crash in
// between may bounce it twice, never not at all. When the bounce cannot be
// queued (a full disk), the message stays in the queue, its outcome
// recorded, and the bounce is tried again later.
func (r *Runner) fail(cur *settings, l *spool.Locked, failed int) (time.Time, string) {
	env := l.Envelope()
	if err := r.bounce(cur, l); err != nil {
		r.log.Error("cannot queue bounce", "id", env.ID, "from", env.From, "err", err)
		env.NextAttempt = r.now().Add(cur.policy.RetryMin)
		if err := l.Update(); err != nil {
			r.log.Error("cannot record delivery attempt", "id", env.ID, "err", err)
		}
		return env.NextAttempt, "bounce not queued: " + err.Error()
	}
	if err := l.MoveTo(spool.FailedQ); err != nil {
		r.log.Error("cannot move message to failed/", "id", env.ID, "err", err)
		return r.now().Add(cur.policy.RetryMin), err.Error()
	}
	r.log.Warn("moved to failed", "id", env.ID, "failed", failed)
	return time.Time{}, fmt.Sprintf("failed for %d recipient(s): moved to failed/", failed)
}

// bounce queues the delivery status notification for the failed
// recipients of l's message that want one, and plans its delivery.
func (r *Runner) bounce(cur *settings, l *spool.Locked) error {
	env := l.Envelope()
	b := cur.policy.Bounce
	if b == nil {
		return nil
	}
	if env.From == "" {
		r.log.Warn("not bounced: null sender", "id", env.ID)
		return nil
	}
	rcpts := bounce.Wanted(env)
	if len(rcpts) == 0 {
		r.log.Info("not bounced: no failed recipient asked for it (NOTIFY)", "id", env.ID, "from", env.From)
		return nil
	}
	benv, err := bounce.Queue(r.spool, b, env, l.Body(), rcpts, r.now())
	if err != nil {
		return err
	}
	r.log.Warn("bounced", "id", env.ID, "bounce", benv.ID, "from", env.From,
		"to", strings.Join(benv.Pending(), ","), "nrcpt", len(rcpts))
	r.opts.Observer.Bounced()
	r.Enqueue(benv.ID, benv.NextAttempt)
	return nil
}

// expire fails every pending recipient of a message that outlived the queue
// lifetime; finish then bounces it.
func (r *Runner) expire(l *spool.Locked) {
	env := l.Envelope()
	now := r.now()
	expired := 0
	for i := range env.Recipients {
		if rc := &env.Recipients[i]; rc.Status == spool.Pending {
			why := fmt.Sprintf("expired after %s in the queue", now.Sub(env.Since()).Round(time.Second))
			if last := cmp.Or(rc.Reply, env.LastError); last != "" {
				why += "; last error: " + last
			}
			rc.Status, rc.Reply, rc.Updated, rc.DSNStatus = spool.Failed, why, now, "4.4.7"
			r.log.Warn("expired", "id", env.ID, "to", rc.Addr, "reason", why)
			expired++
		}
	}
	if expired > 0 {
		r.opts.Observer.Expired(expired)
	}
}
