package main

import (
	"github.com/outboxmta/outbox/config"
	"github.com/outboxmta/outbox/listener"
)

// endpoints returns what the daemon serves: the sendmail submission socket
// and every [[listener]], with their policies.
func endpoints(cfg *config.Config) []listener.Endpoint {
	eps := []listener.Endpoint{{Address: cfg.Sendmail.Socket, Sendmail: true}}
	for _, l := range cfg.Listeners {
		eps = append(eps, listener.Endpoint{Address: l.Address, Networks: l.Networks})
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
