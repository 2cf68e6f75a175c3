package upstream

// Connection reuse. Setting up a session costs the upstream a TCP and TLS
// handshake, two EHLOs and an AUTH (and sometimes a password_command) for
// every message; a reused session costs one RSET. So a Client keeps the
// sessions it has finished with, idle, for idle_timeout, and hands them to
// the next attempts, at most max_messages_per_connection messages each.
//
//   - At most max_connections sessions are open at once (idle ones
//     included); an attempt waits, on its context, for a free one.
//   - A reused session starts with RSET: it ends whatever state the last
//     transaction left and proves the connection still works before any
//     part of the message is sent. If it fails (the server closed the idle
//     connection: EOF, 421, a reset or a timeout) the session is dropped
//     and the attempt connects afresh, once, without that counting as a
//     failed attempt. Nothing of the message was sent on the dead
//     connection, so this can never duplicate it; an attempt that fails
//     after its RSET is reported as usual and never repeated here.
//   - A session is dropped instead of kept when anything about it is in
//     doubt: a network error, a timeout, a 421, a canceled attempt, a body
//     that could not be read.
//   - A session that carried an SMTPUTF8 transaction is dropped too: Exim
//     4.96 keeps SMTPUTF8 for the rest of the connection, RSET or not, and
//     would take later plain mail as SMTPUTF8 mail, which a next hop
//     without SMTPUTF8 refuses.
//   - Idle sessions are used last in, first out, so that when traffic drops
//     the surplus ones age out.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/textproto"
	"slices"
	"sync"
	"time"

	"github.com/outboxmta/outbox/config"
)

const (
	defaultMaxConnections = 4
	defaultMaxMessages    = 100
	// rsetTimeout bounds the RSET that checks an idle connection, like
	// Postfix's smtp_rset_timeout: a live server answers at once, and a
	// dead connection should not hold the message up for a whole
	// command_timeout.
	rsetTimeout = 20 * time.Second
)

// pool is the part of a Client that keeps its sessions.
type pool struct {
	slots       chan struct{} // one per session in use or closing
	maxMessages int
	idleTimeout time.Duration

	mu      sync.Mutex
	idle    []*session // most recently used last
	closed  bool
	closing sync.WaitGroup // background QUITs, while !closed
}

func (p *pool) init(cfg config.Upstream) {
	n := cfg.MaxConnections
	if n <= 0 {
		n = defaultMaxConnections
	}
	p.slots = make(chan struct{}, n)
	p.maxMessages = cfg.MaxMessagesPerConnection
	if p.maxMessages <= 0 {
		p.maxMessages = defaultMaxMessages
	}
	p.idleTimeout = cfg.IdleTimeout.Duration
}

// acquire returns a session ready for MAIL for the message id: an idle one
// that still answers, or a new one (always, if fresh).
func (c *Client) acquire(ctx context.Context, id string, fresh bool) (*session, error) {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		e := newError(ctx, "connect", context.Cause(ctx))
		e.Text += fmt.Sprintf(" (waiting for a free connection: max_connections = %d)", cap(c.slots))
		return nil, e
	}
	if s := c.takeIdle(fresh); s != nil {
		s.begin(ctx, id)
		err := s.reset()
		if err == nil {
			s.log.Debug("reusing connection", "messages", s.msgs)
			return s, nil
		}
		s.broken = true
		s.close()
		if ctx.Err() != nil {
			<-c.slots
			return nil, newError(ctx, "connect", err)
		}
		s.log.Debug("idle connection no longer usable; connecting again", "err", err)
	}
	s := &session{id: id}
	err := c.open(ctx, s)
	c.noteSetup(err)
	if err != nil {
		<-c.slots
		return nil, err
	}
	return s, nil
}

// takeIdle removes the most recently used idle session from the pool,
// unless the caller wants a fresh one.
func (c *Client) takeIdle(fresh bool) *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.idle)
	if n == 0 || fresh {
		return nil
	}
	s := c.idle[n-1]
	c.idle = c.idle[:n-1]
	// If the timer has just fired, expire will not find s and leaves it
	// to us: it was idle barely longer than idle_timeout.
	s.idle.Stop()
	return s
}

// release takes back the session of a finished attempt: into the pool if
// it is fit for another message, else it is closed, with QUIT in the
// background so that the caller can record the outcome at once (a crash
// before it does means the message is sent again). A Client with a Trace
// closes it before returning instead, to keep the dialogue whole and in
// order.
func (c *Client) release(s *session) {
	s.end()
	c.mu.Lock()
	keep := !s.broken && !s.utf8 && !c.closed && c.Trace == nil &&
		s.msgs < c.maxMessages && c.idleTimeout > 0
	if keep {
		c.idle = append(c.idle, s)
		if s.idle == nil {
			s.idle = time.AfterFunc(c.idleTimeout, func() { c.expire(s) })
		} else {
			s.idle.Reset(c.idleTimeout)
		}
		c.mu.Unlock()
		<-c.slots
		return
	}
	if c.Trace != nil {
		c.mu.Unlock()
		s.close()
		<-c.slots
		return
	}
	// The slot stays taken until the QUIT is done, so that no more than
	// max_connections are ever open.
	c.background(func() {
		s.close()
		<-c.slots
	})
	c.mu.Unlock()
}

// expire closes s if it is still idle.
func (c *Client) expire(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.Index(c.idle, s)
	if i < 0 {
		return
	}
	c.idle = slices.Delete(c.idle, i, i+1)
	s.log.Debug("closing idle connection", "idle_timeout", c.idleTimeout.String(), "messages", s.msgs)
	c.background(s.close)
}

// background runs fn in a goroutine that Close waits for, unless Close has
// already run. c.mu must be held.
func (c *Client) background(fn func()) {
	if c.closed {
		go fn()
		return
	}
	c.closing.Go(fn)
}

// Close says QUIT on the idle connections and waits for QUITs under way.
// Attempts in flight finish, and their connections are then closed rather
// than kept; Deliver still works after Close, one connection per message.
func (c *Client) Close() error {
	c.mu.Lock()
	idle := c.idle
	c.idle, c.closed = nil, true
	c.mu.Unlock()
	for _, s := range idle {
		s.idle.Stop()
		c.closing.Go(s.close)
	}
	c.closing.Wait()
	return nil
}

// reset sends RSET on a session that has been idle: see the comment at the
// top. It talks to the connection beneath go-smtp's Client (whose Reset
// would make it send EHLO again, which some servers take to end the
// AUTH state), which is safe because between commands go-smtp has nothing
// buffered that it has not consumed.
func (s *session) reset() error {
	conn := s.pg.Conn
	_, cmdTimeout, _ := s.c.timeouts()
	conn.SetDeadline(time.Now().Add(min(cmdTimeout, rsetTimeout)))
	defer conn.SetDeadline(time.Time{})
	if len(s.pg.pending) > 0 {
		return errors.New("server sent data while the connection was idle")
	}
	if s.rsetBuf == nil {
		s.rsetBuf = bufio.NewReader(conn)
	}
	br := s.rsetBuf
	br.Reset(conn)
	if _, _, err := s.cmd(conn, textproto.NewReader(br), 250, "RSET"); err != nil {
		return err
	}
	if br.Buffered() > 0 {
		return errors.New("server sent data after its RSET reply")
	}
	return nil
}
