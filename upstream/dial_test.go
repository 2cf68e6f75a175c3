package upstream

import (
	"context"
	"net"
	"slices"
	"testing"
)

// TestDialFallsBack: when the host name has several addresses and the one
// tried first refuses, delivery goes on over the next. "localhost" with
// both ::1 and 127.0.0.1 gives that without DNS tricks: the server
// listens on one family only, each way round, so one of the two runs has
// the dead address first whatever the resolver's order.
func TestDialFallsBack(t *testing.T) {
	addrs, err := net.DefaultResolver.LookupHost(context.Background(), "localhost")
	if err != nil || !slices.Contains(addrs, "::1") || !slices.Contains(addrs, "127.0.0.1") {
		t.Skipf("localhost resolves to %v, not to both ::1 and 127.0.0.1", addrs)
	}
	for _, live := range []string{"127.0.0.1", "::1"} {
		t.Run(live, func(t *testing.T) {
			be := &backend{}
			_, port := startServer(t, be, serverOpts{listen: net.JoinHostPort(live, "0")})
			c := New(testCfg("localhost", port, "none"), "client.test", nil)
			defer c.Close()
			mustDeliver(t, c, msg(0))
		})
	}
}
