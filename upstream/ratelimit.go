package upstream

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/time/rate"
)

// rateLimit spaces messages to one upstream at messages_per_minute, for
// providers that cap the sending rate (SES per second, Gmail and Microsoft
// 365 per minute or day) and answer a burst with 4xx or a blocked account.
// It is a token bucket holding one token: after a quiet spell one message
// goes at once, then one every minute/N. A bigger bucket would let a burst
// of N follow a full minute's worth, twice the limit within one minute of
// the provider's rolling count. Attempts wait for their turn before
// taking a connection, so waiting holds none open.
type rateLimit struct {
	perMinute int
	lim       *rate.Limiter
	now       func() time.Time
	sleep     func(context.Context, time.Duration) error
}

func newRateLimit(perMinute int) *rateLimit {
	if perMinute <= 0 {
		return nil
	}
	return &rateLimit{
		perMinute: perMinute,
		lim:       rate.NewLimiter(rate.Every(time.Minute/time.Duration(perMinute)), 1),
		now:       time.Now,
		sleep:     sleepCtx,
	}
}

// wait returns when the next message may go, or an *Error when ctx ends
// first (the turn is then given back).
func (r *rateLimit) wait(ctx context.Context) error {
	if r == nil {
		return nil
	}
	res := r.lim.ReserveN(r.now(), 1)
	d := res.DelayFrom(r.now())
	if d <= 0 {
		return nil
	}
	if err := r.sleep(ctx, d); err != nil {
		res.CancelAt(r.now())
		e := newError(ctx, "rate-limit", err)
		e.Text += fmt.Sprintf(" (waiting for messages_per_minute = %d)", r.perMinute)
		return e
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
