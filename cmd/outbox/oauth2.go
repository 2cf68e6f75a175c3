package main

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"

	"github.com/outboxmta/outbox/config"
	"github.com/outboxmta/outbox/oauth"
)

// oauth2Main runs `outbox oauth2 authorize UPSTREAM`: the one-time
// authorization that stores an upstream's refresh token, with the device
// flow (RFC 8628) or the authorization code flow with PKCE and a loopback
// redirect (Google's mail scope allows only that).
func oauth2Main(ctx context.Context, args []string, e env) error {
	fs, path := flags("oauth2", e)
	flow := fs.String("flow", "", "`device` or `authcode`; default: authcode for provider google, else device")
	port := fs.Int("port", 0, "loopback `port` the authcode flow's redirect goes to (default: any free port)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	const usage = "usage: outbox oauth2 authorize [--config FILE] [--flow=device|authcode] [--port PORT] UPSTREAM"
	if len(pos) != 2 || pos[0] != "authorize" {
		return usageError{usage}
	}
	if *flow != "" && *flow != oauth.FlowDevice && *flow != oauth.FlowAuthCode {
		return usageError{fmt.Sprintf("--flow=%s: want device or authcode\n%s", *flow, usage)}
	}
	if *port < 0 || *port > 65535 {
		return usageError{fmt.Sprintf("--port=%d: not a port number", *port)}
	}
	cfg, err := loadConfig(*path, e)
	if err != nil {
		return err
	}
	var names []string
	for _, u := range cfg.Upstreams {
		if u.OAuth2.Enabled() {
			names = append(names, u.Name)
		}
		if u.Name != pos[1] {
			continue
		}
		if *flow == "" {
			*flow = oauth.DefaultFlow(u.OAuth2)
		}
		var owner oauth.Owner
		if *flow == oauth.FlowAuthCode {
			owner, err = oauth.AuthorizeCode(ctx, u, *port, e.stdin, func(p oauth.CodePrompt) { showCodePrompt(e, u, p) })
		} else {
			owner, err = oauth.Authorize(ctx, u, func(p oauth.Prompt) { showDevicePrompt(e, u, p) })
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "Stored the refresh token in %s (mode %04o, owner %s).\n"+
			"The daemon uses it from its next delivery attempt; `outbox queue flush` sends waiting mail now.\n",
			u.OAuth2.RefreshTokenFile, owner.Mode, ownerName(owner))
		return nil
	}
	hint := "no upstream has an [upstream.oauth2] table"
	if len(names) > 0 {
		hint = "upstreams with an [upstream.oauth2] table: " + strings.Join(names, ", ")
	}
	return usageError{fmt.Sprintf("no upstream named %q (%s)", pos[1], hint)}
}

func showDevicePrompt(e env, u config.Upstream, p oauth.Prompt) {
	fmt.Fprintf(e.stdout, "To let Outbox send mail as %s through %s, open\n\n    %s\n\nin a browser, sign in as %s and enter the code\n\n    %s\n\n",
		u.Username, u.Name, p.URI, u.Username, p.Code)
	if p.Complete != "" {
		fmt.Fprintf(e.stdout, "(or open %s)\n", p.Complete)
	}
	fmt.Fprintln(e.stdout, "Waiting for the approval...")
}

func showCodePrompt(e env, u config.Upstream, p oauth.CodePrompt) {
	host, _ := os.Hostname()
	if host == "" {
		host = "THIS-SERVER"
	}
	fmt.Fprintf(e.stdout, "To let Outbox send mail as %s through %s, open\n\n    %s\n\n"+
		"in a browser, sign in as %s and allow access. The provider then sends the\n"+
		"browser to %s, where Outbox is listening.\n\n"+
		"If the browser runs on another machine, either forward the port first:\n\n"+
		"    ssh -L %d:127.0.0.1:%d %s\n\n"+
		"or, when the browser says it cannot connect, copy the whole address from\n"+
		"its address bar and paste it here.\n\n",
		u.Username, u.Name, p.URL, u.Username, p.RedirectURI, p.Port, p.Port, host)
	fmt.Fprintln(e.stdout, "Waiting for the redirect, or for the address (or just the code) pasted here and Enter...")
}

func ownerName(o oauth.Owner) string {
	u, g := strconv.Itoa(o.UID), strconv.Itoa(o.GID)
	if x, err := user.LookupId(u); err == nil {
		u = x.Username
	}
	if x, err := user.LookupGroupId(g); err == nil {
		g = x.Name
	}
	return u + ":" + g
}
