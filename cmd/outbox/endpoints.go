package main

import (
	"github.com/outboxmta/outbox/config"
	"github.com/outboxmta/outbox/listener"
)

// endpoints returns what the daemon serves: the sendmail submission socket
// and every [[listener]], with their policies. Certificates and users files
// are read by listener.Server.Serve and Reconfigure, which fail if they
// cannot be.
func endpoints(cfg *config.Config) []listener.Endpoint {
	// The sendmail socket has no session limits: the sendmail command
	// would fail on a 421 rather than fall back to its direct drop.
	eps := []listener.Endpoint{{Address: cfg.Sendmail.Socket, Sendmail: true,
		MaxErrors: config.DefaultMaxErrors, Timeout: config.DefaultListenerTimeout}}
	for _, l := range cfg.Listeners {
		eps = append(eps, listener.Endpoint{Address: l.Address, Optional: l.Optional, Networks: l.Networks,
			TLS: listener.TLSMode(l.TLS), CertFile: l.CertFile, KeyFile: l.KeyFile,
			Auth: listener.AuthMode(l.Auth), UsersFile: l.UsersFile,
			MaxSessions: l.MaxSessions, MaxSessionsPerClient: l.MaxSessionsPerClient,
			MaxErrors: l.MaxErrors, Timeout: l.Timeout.Duration})
	}
	return eps
}

// listenerOptions returns the settings shared by all endpoints.
func listenerOptions(cfg *config.Config) listener.Options {
	return listener.Options{
		Hostname:       cfg.Hostname,
		MaxMessageSize: int64(cfg.MaxMessageSize),
		MaxRecipients:  cfg.MaxRecipients,
		Aliases:        aliases(cfg),
	}
}
