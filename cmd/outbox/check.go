package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/outboxmta/outbox/config"
	"github.com/outboxmta/outbox/internal/address"
	"github.com/outboxmta/outbox/sendmail"
	"github.com/outboxmta/outbox/spool"
	"github.com/outboxmta/outbox/upstream"
)

const checkUsage = `usage: outbox check [--config FILE] [--config-only] [--send-test ADDRESS [--from ADDRESS]]

Validates the configuration, then, for each [[upstream]]: connects as the
daemon would, shows the TLS version, the certificate chain (subject, issuer,
expiry of each certificate) and whether it verified, the extensions the
server advertises, and tries AUTH. No mail is sent unless --send-test is
given: then a test message goes to ADDRESS through each upstream directly
(not through the queue), and the upstream's reply is shown.

  --config-only         only validate the configuration (also: check-config)
  --send-test ADDRESS   send a test message to ADDRESS through each upstream
  --from ADDRESS        its envelope sender and From: (default: [masquerade]
                        sender, else the upstream's username if it is an
                        address, else postmaster@DOMAIN)

Exit status:
  0   every upstream would take mail (warnings, such as a certificate that
      expires within 14 days, do not change it)
  69  EX_UNAVAILABLE: an upstream cannot be used: unreachable, TLS or
      certificate failure, a temporary refusal, or the test message refused
  78  EX_CONFIG: the configuration is invalid, a file it names cannot be
      read, or an upstream refused the credentials (e.g. AUTH 535)
  64  usage error
`

// expiryWarning is how close to its expiry a leaf certificate gets a warning.
const expiryWarning = 14 * 24 * time.Hour

// checkMain validates the configuration and, unless --config-only, probes
// each upstream and optionally sends a test message through it.
func checkMain(ctx context.Context, args []string, e env) int {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			fmt.Fprint(e.stdout, checkUsage)
			return sendmail.ExOK
		}
	}
	fs, path := flags("check", e)
	fs.Usage = func() { fmt.Fprint(e.stderr, checkUsage) }
	configOnly := fs.Bool("config-only", false, "")
	sendTo := fs.String("send-test", "", "")
	from := fs.String("from", "", "")
	if pos, err := parse(fs, args); err != nil {
		return exitCode(e, "check", err)
	} else if len(pos) > 0 {
		return exitCode(e, "check", usageError{fmt.Sprintf("unexpected argument %q", pos[0])})
	}
	for _, a := range []struct{ flag, addr string }{{"--send-test", *sendTo}, {"--from", *from}} {
		if a.addr != "" {
			if err := address.Valid(a.addr); err != nil {
				return exitCode(e, "check", usageError{fmt.Sprintf("%s %q: %v", a.flag, a.addr, err)})
			}
		}
	}
	cfg, err := loadConfig(*path, e)
	if err != nil {
		return exitCode(e, "check", err)
	}
	fmt.Fprintf(e.stdout, "%s: configuration OK\n", cfg.Path)
	if *configOnly {
		return sendmail.ExOK
	}
	log := newLogger(e.stderr, "warn")
	status := sendmail.ExOK
	if len(cfg.Upstreams) == 0 {
		fmt.Fprintf(e.stdout, "no upstream: mail leaves by air-gap export to %s\n", cfg.Airgap.ExportDir)
		if *sendTo != "" {
			return exitCode(e, "check", usageError{"--send-test needs an [[upstream]]"})
		}
	}
	for _, u := range cfg.Upstreams {
		c := newClient(u, cfg.Hostname, log)
		st := checkUpstream(ctx, e.stdout, cfg, u, c, *sendTo, *from)
		status = worse(status, st)
	}
	return status
}

// checkUpstream probes one upstream, sends the test message if asked, and
// returns the exit status it deserves.
func checkUpstream(ctx context.Context, w io.Writer, cfg *config.Config, u config.Upstream, c *upstream.Client, sendTo, from string) int {
	fmt.Fprintf(w, "upstream %s (%s, tls = %q):\n", u.Name, u.Address(), u.TLS)
	res, err := c.Probe(ctx)
	printProbe(w, u, res, time.Now())
	if err != nil {
		fmt.Fprintf(w, "upstream %s: FAILED: %v\n", u.Name, err)
		return probeStatus(err)
	}
	if sendTo != "" {
		if st := sendTest(ctx, w, cfg, u, c, sendTo, from); st != sendmail.ExOK {
			return st
		}
	}
	fmt.Fprintf(w, "upstream %s: OK\n", u.Name)
	return sendmail.ExOK
}

// worse returns the status that says more: a configuration error over an
// unavailable upstream over success.
func worse(a, b int) int {
	rank := map[int]int{sendmail.ExOK: 0, sendmail.ExUnavailable: 1, sendmail.ExConfig: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// probeStatus maps a failed probe or test to an exit status: what the
// administrator fixes in the configuration (unreadable ca_file or password,
// credentials refused, an AUTH setting the connection cannot honour) is
// EX_CONFIG; everything else about the upstream is EX_UNAVAILABLE.
func probeStatus(err error) int {
	var ue *upstream.Error
	if errors.As(err, &ue) {
		switch {
		case ue.Op == "tls-config", ue.Op == "credentials":
			return sendmail.ExConfig
		case ue.Op == "auth" && (ue.Code == 0 || ue.Code >= 500):
			return sendmail.ExConfig
		}
	}
	return sendmail.ExUnavailable
}

// printProbe shows what the connection negotiated, as far as it got.
func printProbe(w io.Writer, u config.Upstream, r upstream.ProbeResult, now time.Time) {
	if r.Address != "" {
		fmt.Fprintf(w, "  connected:   %s\n", r.Address)
	}
	switch {
	case r.TLS:
		fmt.Fprintf(w, "  tls:         %s %s\n", r.TLSVersion, r.CipherSuite)
	case len(r.Chain) > 0:
		fmt.Fprintln(w, "  tls:         handshake failed")
	case r.Address != "":
		fmt.Fprintln(w, "  tls:         none (cleartext)")
	}
	if len(r.Chain) > 0 {
		switch {
		case r.Verified:
			fmt.Fprintf(w, "  certificate: verified for %s\n", r.ServerName)
		case u.InsecureSkipVerify:
			fmt.Fprintf(w, "  certificate: NOT verified for %s (accepted anyway: insecure_skip_verify): %s\n", r.ServerName, r.VerifyError)
		default:
			fmt.Fprintf(w, "  certificate: NOT verified for %s: %s\n", r.ServerName, r.VerifyError)
		}
		printChain(w, r.Chain, now)
	}
	exts := make([]string, 0, len(r.Extensions))
	for k, v := range r.Extensions {
		exts = append(exts, strings.TrimSpace(k+" "+v))
	}
	sort.Strings(exts)
	if len(exts) > 0 {
		fmt.Fprintf(w, "  extensions:  %s\n", strings.Join(exts, ", "))
	}
	switch {
	case r.AuthMechanism != "":
		fmt.Fprintf(w, "  auth:        %s as %s: accepted\n", r.AuthMechanism, u.Username)
	case u.Auth == "none" && r.Address != "":
		fmt.Fprintln(w, "  auth:        none configured")
	}
}

// printChain lists each certificate, leaf first, and warns about a leaf
// close to its expiry (or past it).
func printChain(w io.Writer, chain []*x509.Certificate, now time.Time) {
	for i, c := range chain {
		fmt.Fprintf(w, "    %d subject: %s\n      issuer:  %s\n      expires: %s (%s)\n",
			i, c.Subject, c.Issuer, c.NotAfter.UTC().Format(time.DateTime+" MST"), untilText(c.NotAfter.Sub(now)))
	}
	leaf := chain[0]
	switch left := leaf.NotAfter.Sub(now); {
	case left <= 0:
		fmt.Fprintf(w, "  WARNING: the server's certificate expired %s ago\n", days(-left))
	case left < expiryWarning:
		fmt.Fprintf(w, "  WARNING: the server's certificate expires in %s (on %s)\n", days(left), leaf.NotAfter.UTC().Format(time.DateOnly))
	}
}

func untilText(d time.Duration) string {
	if d <= 0 {
		return "expired " + days(-d) + " ago"
	}
	return "in " + days(d)
}

// days says d in days, or hours under two days.
func days(d time.Duration) string {
	if d < 48*time.Hour {
		return fmt.Sprintf("%d hours", int(d.Hours()))
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}

// sendTest sends a test message to `to` through c and reports the reply.
func sendTest(ctx context.Context, w io.Writer, cfg *config.Config, u config.Upstream, c *upstream.Client, to, from string) int {
	if from == "" {
		from = testSender(cfg, u)
	}
	now := time.Now()
	id := spool.NewID(now)
	msg := testMessage(cfg.Hostname, u, from, to, id, now)
	results, err := c.Deliver(ctx, &upstream.Message{ID: id, From: from, Recipients: []string{to},
		Body: strings.NewReader(msg), Size: int64(len(msg))})
	if err != nil {
		fmt.Fprintf(w, "  send-test:   from <%s> to <%s>: NOT sent: %v\n", from, to, err)
		fmt.Fprintf(w, "upstream %s: FAILED: test message not accepted\n", u.Name)
		return probeStatus(err)
	}
	for _, r := range results {
		reply := strings.TrimSpace(fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text))
		if r.Status != upstream.Delivered {
			fmt.Fprintf(w, "  send-test:   from <%s> to <%s>: %s: %s\n", from, to, r.Status, reply)
			fmt.Fprintf(w, "upstream %s: FAILED: test message not accepted\n", u.Name)
			return sendmail.ExUnavailable
		}
		fmt.Fprintf(w, "  send-test:   from <%s> to <%s>: accepted: %s\n", from, to, reply)
	}
	return sendmail.ExOK
}

// testSender is the default sender of the test message: the one the
// daemon's mail would show, or the account's own address, which smarthosts
// that check senders accept.
func testSender(cfg *config.Config, u config.Upstream) string {
	switch {
	case cfg.Masquerade.Sender != "":
		return cfg.Masquerade.Sender
	case strings.Contains(u.Username, "@"):
		return u.Username
	}
	return "postmaster@" + cfg.Domain
}

// testMessage is the test message: its Subject names the host and the
// time, so it is recognised in a mailbox among others.
func testMessage(hostname string, u config.Upstream, from, to, id string, now time.Time) string {
	date := now.Format(time.RFC1123Z)
	lines := []string{
		"From: Outbox on " + hostname + " <" + from + ">",
		"To: <" + to + ">",
		"Subject: Outbox test message from " + hostname + " at " + now.Format("2006-01-02 15:04:05 MST"),
		"Date: " + date,
		"Message-ID: <" + id + "@" + hostname + ">",
		"Auto-Submitted: auto-generated",
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=us-ascii",
		"",
		"This is a test message sent by `outbox check --send-test` on " + hostname,
		"at " + date + ",",
		"through the upstream " + u.Name + " (" + u.Address() + ").",
		"",
		"If you read this, mail from " + hostname + " reaches you.",
	}
	return strings.Join(lines, "\r\n") + "\r\n"
}
