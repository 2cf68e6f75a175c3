package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"
)

// stopLimit bounds the shutdown: the listeners' drain (10 s, see
// listener/drain.go) and the delivery attempts cut short recording their
// outcome take far less. A part still running then has missed the end of
// its context (a bug, or a hung disk); the daemon exits 1 without it
// rather than run on with its sockets closed or, worse, one left open.
const stopLimit = 30 * time.Second

// parts are the daemon's goroutines that run until their context ends:
// the listeners, the queue runner, the metrics endpoint.
type parts struct {
	ctx     context.Context
	cancel  context.CancelCauseFunc
	names   []string
	results chan partResult
}

type partResult struct {
	name string
	err  error
}

// newParts returns parts that run under ctx; cancel ends ctx, with the
// first failure as its cause.
func newParts(ctx context.Context, cancel context.CancelCauseFunc) *parts {
	return &parts{ctx: ctx, cancel: cancel, results: make(chan partResult, 16)}
}

// start runs fn as the part name (unique: "listener ADDR", ...). Every
// start comes before wait.
func (ps *parts) start(name string, fn func(context.Context) error) {
	ps.names = append(ps.names, name)
	go func() { ps.results <- partResult{name, fn(ps.ctx)} }()
}

// wait returns when every part has returned. The first to fail ends the
// context of the others, and wait returns its error. If parts are still
// running limit after the context ended, wait gives up on them and
// returns an error naming them.
func (ps *parts) wait(limit time.Duration, log *slog.Logger) error {
	running := map[string]bool{}
	for _, n := range ps.names {
		running[n] = true
	}
	var first error
	var giveUp <-chan time.Time
	ctxDone := ps.ctx.Done()
	for left := len(ps.names); left > 0; {
		select {
		case <-ctxDone:
			ctxDone = nil
			t := time.NewTimer(limit)
			defer t.Stop()
			giveUp = t.C
		case <-giveUp:
			err := fmt.Errorf("shutdown: %s still running %s after it began; exiting without waiting", stillRunning(running), limit)
			log.Error("stopping", "err", err)
			return err
		case r := <-ps.results:
			left--
			delete(running, r.name)
			if r.err != nil && first == nil {
				first = r.err
				log.Error("stopping", "err", r.err)
				ps.cancel(r.err)
			}
		}
	}
	if first != nil && !errors.Is(first, context.Canceled) {
		return first
	}
	return nil
}

func stillRunning(running map[string]bool) string {
	return strings.Join(slices.Sorted(maps.Keys(running)), ", ")
}
