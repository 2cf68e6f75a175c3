package main

import (
	"context"
	"fmt"
	"os/user"
	"strconv"
	"strings"

	"github.com/outboxmta/outbox/oauth"
)

// oauth2Main runs `outbox oauth2 authorize UPSTREAM`: the one-time device
// authorization (RFC 8628) that stores an upstream's refresh token.
func oauth2Main(ctx context.Context, args []string, e env) error {
	fs, path := flags("oauth2", e)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || pos[0] != "authorize" {
		return usageError{"usage: outbox oauth2 authorize [--config FILE] UPSTREAM"}
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
		owner, err := oauth.Authorize(ctx, u, func(p oauth.Prompt) {
			fmt.Fprintf(e.stdout, "To let Outbox send mail as %s through %s, open\n\n    %s\n\nin a browser, sign in as %s and enter the code\n\n    %s\n\n",
				u.Username, u.Name, p.URI, u.Username, p.Code)
			if p.Complete != "" {
				fmt.Fprintf(e.stdout, "(or open %s)\n", p.Complete)
			}
			fmt.Fprintln(e.stdout, "Waiting for the approval...")
		})
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
