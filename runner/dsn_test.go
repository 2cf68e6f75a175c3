package runner

import (
	"fmt"
	"testing"

	"github.com/outboxmta/outbox/spool"
)

// The DSN parameters go out with their own recipients: only the pending
// ones, in the order of Envelope.Pending.
func TestPendingDSN(t *testing.T) {
	env := &spool.Envelope{Recipients: []spool.Recipient{
		{Addr: "a@x", Status: spool.Delivered, DSNNotify: "SUCCESS"},
		{Addr: "b@x", Status: spool.Pending, DSNNotify: "FAILURE", DSNOrcpt: "rfc822;b@y"},
		{Addr: "c@x", Status: spool.Failed, DSNNotify: "NEVER"},
		{Addr: "d@x", Status: spool.Pending},
	}}
	got := fmt.Sprint(env.Pending(), pendingDSN(env))
	if want := "[b@x d@x] [{FAILURE rfc822;b@y} { }]"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
