package upstream

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// authHoldOff is how long a Client defers messages, without connecting,
// after the upstream refused its credentials (a 5xx to AUTH: 535 5.7.8
// and the like). Bad credentials do not heal by themselves, and a
// provider that sees a burst of failed logins locks the account or the
// client's address (Gmail, Microsoft 365 and fail2ban on self-run
// servers all do), which would turn a typo into an outage. One minute
// matches retry_min's default, so a queue of many messages costs the
// server one login attempt a minute instead of one per message, and mail
// flows again within a minute of the fix (at once after `systemctl
// reload outbox`, which builds a new Client). Problems that do not reach
// the server with credentials (an unreadable password_file, an OAuth
// token refresh that failed, 454 temporary failures) are not held.
const authHoldOff = time.Minute

// AuthRefused reports whether err is the upstream refusing the
// credentials: a 5xx reply to AUTH (535 5.7.8 and the like). Such errors
// are temporary for the message, which waits for the credentials to be
// fixed, and the Client holds them itself (authHoldOff).
func AuthRefused(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Op == "auth" && e.Code >= 500
}

// authState remembers a refused login between attempts.
type authState struct {
	mu    sync.Mutex
	err   *Error    // the refusal; nil while logins work or were not tried
	until time.Time // no new attempt before then
	now   func() time.Time
}

// held returns the remembered refusal while the hold-off runs. When it has
// run out, the caller goes ahead to log in again on a new connection
// (probe), and the others keep waiting for one more hold-off in case that
// fails too.
func (c *Client) held() (probe bool, err error) {
	a := &c.auth
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err == nil {
		return false, nil
	}
	now := a.now()
	if now.Before(a.until) {
		e := *a.err
		e.Text += fmt.Sprintf(" (not retried before %s)", a.until.Format(time.TimeOnly))
		return false, &e
	}
	a.until = now.Add(authHoldOff)
	return true, nil
}

// noteSetup records how setting up a new session went (err is open's
// error, nil on success) and logs when that changes whether the upstream
// accepts the credentials: once when it starts refusing them, saying what
// to fix, and once when it accepts them again.
func (c *Client) noteSetup(err error) {
	e, _ := err.(*Error)
	refused := AuthRefused(err)
	if err != nil && !refused {
		return // not about the credentials: nothing learned
	}
	a := &c.auth
	a.mu.Lock()
	defer a.mu.Unlock()
	if !refused {
		if a.err != nil {
			c.log.Info("upstream accepts the credentials again; held mail is being delivered")
			a.err = nil
		}
		return
	}
	if a.err == nil || a.err.Error() != e.Error() {
		c.log.Error("upstream refused the credentials: mail for it is held and AUTH retried once a minute",
			"err", e.Error(), "fix", fmt.Sprintf("check username %q and the secret from %s, then run `outbox check`; `systemctl reload outbox` retries at once",
				c.cfg.Username, secretSource(c.cfg)))
	}
	a.err, a.until = e, a.now().Add(authHoldOff)
}
