package listener

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/outboxmta/outbox/spool"
)

// closeSignal is a listener that tells when it is closed.
type closeSignal struct {
	net.Listener
	once   sync.Once
	closed chan struct{}
}

func (l *closeSignal) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// The narrowest case of TestServeStoppedBeforeStart, every time: ctx ends
// after Serve armed its shutdown but before go-smtp took the socket (a
// slow log write holds Serve there until the shutdown has run). Serve must
// return, and leave the socket closed.
func TestServeStoppedWhileStarting(t *testing.T) {
	sp, err := spool.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() }) // ends a Serve left behind
	l := &closeSignal{Listener: raw, closed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		if bytes.Contains(p, []byte("msg=listening")) {
			cancel()
			select {
			case <-l.closed:
			case <-time.After(time.Second): // the shutdown has had its chance
			}
		}
		return len(p), nil
	}), nil))
	srv := New(sp, Options{Hostname: "relay.test"}, nil, log)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l, Endpoint{Address: raw.Addr().String()}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve still running 30 s after its context ended")
	}
	select {
	case <-l.closed:
	default:
		t.Error("Serve returned with the socket open")
	}
}
