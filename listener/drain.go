package listener

// Ending SMTP sessions at shutdown.
//
// What go-smtp does by itself: Server.Shutdown (Serve calls it when its
// context ends) closes the listening socket and waits for the
// sessions to end on their own; it says nothing to them, and an idle
// client can keep its session, and even start new transactions, as long as
// it likes. Server.Close does nothing after a
// Shutdown (v0.25.1: both start by closing the same channel). And
// Server.Serve returns as soon as the listening socket is closed, without
// waiting for the sessions, so a daemon that exited then would cut every
// session at once.
//
// drain adds what is missing: Serve waits for the sessions to end,
// up to drainTimeout after shutdown began, then closes those left without
// a reply (a client in the middle of DATA loses that transaction: it was
// never answered 250, so nothing is lost, and it sends again later). And a
// session that is waiting for its client (the server spoke last, and the
// client has been silent for idleAfter) is ended with a 421 reply: its
// read is cut short, and go-smtp answers "421 4.4.2 Idle timeout, bye bye"
// and closes. A session in progress, a client sending a message or
// commands, goes on to the end of its transaction, gets its 250, and the
// 421 when it next waits.

import (
	"net"
	"sync"
	"time"
)

const (
	// idleAfter is how long a client must have been silent, after a
	// reply, for its session to count as idle at shutdown. SMTP clients
	// in a transaction answer within milliseconds.
	idleAfter = time.Second
	// drainTimeout bounds the wait for sessions after shutdown began.
	drainTimeout = 10 * time.Second
)

// drain tracks the SMTP connections of one endpoint.
type drain struct {
	mu       sync.Mutex
	conns    map[*drainConn]struct{}
	stopping bool
	deadline time.Time     // stopping: when the sessions left are closed
	empty    chan struct{} // closed when stopping and no connection is left
	emptied  bool          // empty is closed
}

func newDrain() *drain {
	return &drain{conns: map[*drainConn]struct{}{}, empty: make(chan struct{})}
}

// listener returns l with its connections tracked.
func (d *drain) listener(l net.Listener) net.Listener { return &drainListener{Listener: l, d: d} }

// stop begins the shutdown: from now on sessions waiting for their clients
// are ended. It returns at once.
func (d *drain) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping {
		return
	}
	d.stopping = true
	d.deadline = time.Now().Add(drainTimeout)
	if len(d.conns) == 0 {
		d.emptied = true
		close(d.empty)
		return
	}
	go d.sweep()
}

// sweep ends idle sessions until none is left.
func (d *drain) sweep() {
	t := time.NewTicker(idleAfter / 10)
	defer t.Stop()
	for {
		select {
		case <-d.empty:
			return
		case <-t.C:
		}
		d.mu.Lock()
		for c := range d.conns {
			c.endIfIdle()
		}
		d.mu.Unlock()
	}
}

// wait begins the shutdown if it has not begun, waits until every
// connection is closed or drainTimeout has passed since shutdown began, and
// closes those left.
func (d *drain) wait() {
	d.stop()
	d.mu.Lock()
	left := time.Until(d.deadline)
	d.mu.Unlock()
	select {
	case <-d.empty:
		return
	case <-time.After(left):
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for c := range d.conns {
		c.Conn.Close()
	}
}

func (d *drain) add(c *drainConn) {
	d.mu.Lock()
	d.conns[c] = struct{}{}
	d.mu.Unlock()
}

func (d *drain) remove(c *drainConn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.conns[c]; !ok {
		return
	}
	delete(d.conns, c)
	if d.stopping && len(d.conns) == 0 && !d.emptied {
		d.emptied = true
		close(d.empty)
	}
}

type drainListener struct {
	net.Listener
	d *drain
}

func (l *drainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	dc := &drainConn{Conn: c, d: l.d}
	l.d.add(dc)
	return dc, nil
}

// drainConn is a connection whose last I/O is known. It sits below TLS, so
// it sees only that the server or the client sent something last, not what.
type drainConn struct {
	net.Conn
	d *drain

	mu        sync.Mutex
	wroteLast time.Time // when the server last wrote, zero if the client spoke since
	ended     bool      // reads are cut short for good
	closeOnce sync.Once
}

// NetConn returns the socket, as tls.Conn's method of the same name does
// (the listener looks through wrappers for the peer's credentials).
func (c *drainConn) NetConn() net.Conn { return c.Conn }

func (c *drainConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.wroteLast = time.Time{}
		c.mu.Unlock()
	}
	return n, err
}

func (c *drainConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.mu.Lock()
		c.wroteLast = time.Now()
		c.mu.Unlock()
	}
	return n, err
}

// SetReadDeadline keeps the read of an ended session cut short: go-smtp
// sets a new deadline before every command it reads.
func (c *drainConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *drainConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return c.Conn.SetWriteDeadline(t)
	}
	return c.Conn.SetDeadline(t)
}

// endIfIdle cuts the session's read short if the server spoke last and
// the client has said nothing for idleAfter: go-smtp takes it for a
// timeout, answers 421 and closes.
func (c *drainConn) endIfIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended || c.wroteLast.IsZero() || time.Since(c.wroteLast) < idleAfter {
		return
	}
	c.ended = true
	c.Conn.SetReadDeadline(time.Unix(1, 0))
}

func (c *drainConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { c.d.remove(c) })
	return err
}
