package main

// Ports a test holds for its whole run. A port picked with freeAddr is
// free only until someone binds it: while a test's sink is down (an
// outage lasting seconds, longer on a loaded machine) or its daemon is
// being restarted, any other process on the machine that listens on port
// 0 (another test's sink or daemon) may get it. The test's daemon then
// delivers to that stranger, and its clients submit to it: messages
// vanish from the test's point of view, or a stranger's messages (with the
// same markers) show up as duplicates. A held port never becomes free: the
// test keeps the listening socket and lends it to each process that serves
// the port.

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
)

// heldPort is a listening TCP socket the test owns. While no process
// serves it, it refuses every connection (accepts and resets it), which a
// client sees as a server that is down.
type heldPort struct {
	addr string
	file *os.File // the socket, lent to the process serving the port

	mu      sync.Mutex
	refuser net.Listener // non-nil while refusing
	stopped chan struct{}
}

// holdPort binds addr (one freeAddr returned a moment ago) and keeps it
// until the test ends, refusing connections until lend.
func holdPort(t *testing.T, addr string) *heldPort {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("holding %s: %v (taken by another process since freeAddr)", addr, err)
	}
	f, err := l.(*net.TCPListener).File()
	l.Close()
	if err != nil {
		t.Fatal(err)
	}
	h := &heldPort{addr: addr, file: f}
	h.refuse(t)
	// Registered before any process that is lent the socket starts, so it
	// runs after their cleanups have killed them.
	t.Cleanup(func() {
		h.lend(t)
		f.Close()
	})
	return h
}

// refuse makes the port refuse connections: call it once the process it
// was lent to has exited.
func (h *heldPort) refuse(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refuser != nil {
		return
	}
	l, err := net.FileListener(h.file)
	if err != nil {
		t.Fatal(err)
	}
	h.refuser, h.stopped = l, make(chan struct{})
	go func(stopped chan struct{}) {
		defer close(stopped)
		for {
			c, err := l.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			c.(*net.TCPConn).SetLinger(0) // a reset, as close to "refused" as a listening socket gets
			c.Close()
		}
	}(h.stopped)
}

// lend stops refusing and returns the socket for a child process
// (exec.Cmd.ExtraFiles). Connections arriving before the child accepts
// wait in the backlog.
func (h *heldPort) lend(t *testing.T) *os.File {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refuser != nil {
		h.refuser.Close()
		<-h.stopped
		h.refuser = nil
	}
	return h.file
}

// While a world holds its ports, no other process can listen on them, not
// even while the sink is down or the daemon is between two starts; the
// sink's port refuses connections then.
func TestHeldPortsKeepStrangersOut(t *testing.T) {
	w := newWorld(t)
	w.holdPorts(t)
	stranger := func(when string) {
		t.Helper()
		for _, addr := range []string{w.sinkAddr, w.listen} {
			if l, err := net.Listen("tcp", addr); err == nil {
				l.Close()
				t.Errorf("%s: another process could listen on held port %s", when, addr)
			}
		}
	}
	stranger("before the first start")
	if greets(w.sinkAddr) {
		t.Error("the sink's port greets before the sink runs")
	}
	w.startSink(t)
	w.startServe(t)
	w.smtpSend(t, "app@example.com", []string{"bob@example.net"}, "Subject: held\r\nX-Marker: held\r\n\r\nx\r\n")
	waitFor(t, "the message at the sink", func() bool { return w.count(t, "X-Marker: held") == 1 })
	w.stopSinkWith(t, syscall.SIGKILL)
	w.serve.stop(t, syscall.SIGKILL)
	stranger("with the sink and the daemon down")
	if greets(w.sinkAddr) {
		t.Error("the sink's port greets after the sink stopped")
	}
}
