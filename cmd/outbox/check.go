package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/outboxmta/outbox/upstream"
)

// checkMain validates the configuration and, unless --config-only, connects
// to each upstream, negotiates TLS and AUTH, and reports what it found. Exit
// status: 0 all good, 78 bad configuration, 69 an upstream is not usable.
func checkMain(ctx context.Context, args []string, e env) int {
	fs, path := flags("check", e)
	configOnly := fs.Bool("config-only", false, "only validate the configuration")
	if _, err := parse(fs, args); err != nil {
		return exitCode(e, "check", err)
	}
	cfg, err := loadConfig(*path, e)
	if err != nil {
		return exitCode(e, "check", err)
	}
	fmt.Fprintf(e.stdout, "%s: configuration OK\n", cfg.Path)
	if *configOnly {
		return 0
	}
	log := newLogger(e.stderr, "warn")
	status := 0
	if len(cfg.Upstreams) == 0 {
		fmt.Fprintf(e.stdout, "no upstream: mail leaves by air-gap export to %s\n", cfg.Airgap.ExportDir)
	}
	for _, u := range cfg.Upstreams {
		res, err := newClient(u, cfg.Hostname, log).Probe(ctx)
		printProbe(e.stdout, u.Address(), res)
		if err != nil {
			fmt.Fprintf(e.stdout, "upstream %s: FAILED: %v\n", u.Address(), err)
			status = 69
			continue
		}
		fmt.Fprintf(e.stdout, "upstream %s: OK\n", u.Address())
	}
	return status
}

// printProbe shows what the connection negotiated, as far as it got.
func printProbe(w io.Writer, addr string, r upstream.ProbeResult) {
	if r.TLS {
		verified := "verified"
		if !r.Verified {
			verified = "NOT verified: " + r.VerifyError
		}
		fmt.Fprintf(w, "  tls:         %s %s\n  certificate: %s (issuer %s), %s\n",
			r.TLSVersion, r.CipherSuite, r.PeerSubject, r.PeerIssuer, verified)
	} else {
		fmt.Fprintln(w, "  tls:         none (cleartext)")
	}
	exts := make([]string, 0, len(r.Extensions))
	for k, v := range r.Extensions {
		exts = append(exts, strings.TrimSpace(k+" "+v))
	}
	sort.Strings(exts)
	if len(exts) > 0 {
		fmt.Fprintf(w, "  extensions:  %s\n", strings.Join(exts, ", "))
	}
	if r.AuthMechanism != "" {
		fmt.Fprintf(w, "  auth:        %s accepted\n", r.AuthMechanism)
	}
}
