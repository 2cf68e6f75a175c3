package config

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Defaults documented in config.go and config.example.toml.
const (
	DefaultMaxMessageSize Size = 25 << 20
	DefaultMaxRecipients       = 1000
	DefaultSpoolDir            = "/var/spool/outbox"
	DefaultSendmailSocket      = "/run/outbox/submit.sock"
	// DefaultSpoolMinFree is off: see Spool.MinFree.
	DefaultSpoolMinFree Size = 0
	// DefaultListenAddress and DefaultListenAddress6 are the listeners
	// when none is configured. The IPv6 one is optional: a host without an
	// IPv6 loopback skips it with a warning instead of failing to start.
	DefaultListenAddress  = "127.0.0.1:25"
	DefaultListenAddress6 = "[::1]:25"

	// Per [[listener]]: see Listener.
	DefaultMaxSessions                        = 100
	DefaultMaxSessionsPerClient               = 20
	DefaultMaxErrors                          = 10
	DefaultListenerTimeout      time.Duration = 5 * time.Minute

	// Per [[upstream]] connection reuse: see Upstream and docs/design.md.
	DefaultUpstreamIdleTimeout      time.Duration = 5 * time.Second
	DefaultMaxMessagesPerConnection               = 100
	DefaultUpstreamMaxConnections                 = 4
)

// defaultAllowNetworks is the loopback, trusted to submit without AUTH.
var defaultAllowNetworks = []string{"127.0.0.0/8", "::1/128"}

// osHostname is a variable so tests do not depend on the machine's name.
var osHostname = os.Hostname

// defaults fills in what the file left out. Strings default when empty,
// since an empty string is never a useful value for them (the example sets
// ca_file = "" to mean "default"); numbers and durations default only when
// absent, so that an explicit 0 reaches validation instead of quietly
// becoming the default.
func (l *loader) defaults(c *Config) {
	if c.Hostname == "" {
		h, err := osHostname()
		if err != nil {
			l.errorf("hostname", "not set, and the host's name is unknown (%v)", err)
		}
		// A name without a dot is kept: it is the best we have, and the
		// administrator can set hostname when the smarthost insists.
		c.Hostname = h
	}
	if c.Domain == "" {
		c.Domain = c.Hostname
	}
	if !l.set["max_message_size"] {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if !l.set["max_recipients"] {
		c.MaxRecipients = DefaultMaxRecipients
	}

	if c.Spool.Dir == "" {
		c.Spool.Dir = DefaultSpoolDir
	}
	l.defaultDuration(&c.Spool.RetryMin, "spool.retry_min", time.Minute)
	l.defaultDuration(&c.Spool.RetryMax, "spool.retry_max", time.Hour)
	l.defaultDuration(&c.Spool.Lifetime, "spool.lifetime", 5*day)
	if !l.set["spool.min_free"] {
		c.Spool.MinFree = DefaultSpoolMinFree
	}

	if c.Sendmail.Socket == "" {
		c.Sendmail.Socket = DefaultSendmailSocket
	}

	if !l.set["masquerade.rewrite_from"] {
		c.Masquerade.RewriteFrom = true
	}

	// An explicit `listener = []` is kept: it means sendmail-only.
	if !l.set["listener"] {
		c.Listeners = []Listener{{Address: DefaultListenAddress}, {Address: DefaultListenAddress6, Optional: true}}
	}
	for i := range c.Listeners {
		ln, p := &c.Listeners[i], fmt.Sprintf("listener[%d]", i)
		if ln.TLS == "" {
			ln.TLS = "none"
		}
		if ln.Auth == "" {
			ln.Auth = "none"
		}
		if !l.set[p+".allow_networks"] {
			ln.AllowNetworks = append([]string(nil), defaultAllowNetworks...)
		}
		l.defaultInt(&ln.MaxSessions, p+".max_sessions", DefaultMaxSessions)
		l.defaultInt(&ln.MaxSessionsPerClient, p+".max_sessions_per_client", DefaultMaxSessionsPerClient)
		l.defaultInt(&ln.MaxErrors, p+".max_errors", DefaultMaxErrors)
		l.defaultDuration(&ln.Timeout, p+".timeout", DefaultListenerTimeout)
	}

	for i := range c.Upstreams {
		u, p := &c.Upstreams[i], fmt.Sprintf("upstream[%d]", i)
		portSet := l.set[p+".port"]
		if u.TLS == "" {
			if portSet && u.Port == 465 {
				u.TLS = "implicit"
			} else {
				u.TLS = "starttls"
			}
		}
		if !portSet {
			if u.TLS == "implicit" {
				u.Port = 465
			} else {
				u.Port = 587
			}
		}
		if u.TLSServerName == "" {
			u.TLSServerName = u.Host
		}
		l.defaultOAuth2(u, p)
		if u.Auth == "" {
			if u.Username != "" {
				u.Auth = "auto"
			} else {
				u.Auth = "none"
			}
		}
		l.defaultDuration(&u.ConnectTimeout, p+".connect_timeout", 30*time.Second)
		l.defaultDuration(&u.CommandTimeout, p+".command_timeout", 5*time.Minute)
		l.defaultDuration(&u.DataTimeout, p+".data_timeout", 10*time.Minute)
		l.defaultDuration(&u.IdleTimeout, p+".idle_timeout", DefaultUpstreamIdleTimeout)
		l.defaultInt(&u.MaxMessagesPerConnection, p+".max_messages_per_connection", DefaultMaxMessagesPerConnection)
		l.defaultInt(&u.MaxConnections, p+".max_connections", DefaultUpstreamMaxConnections)
	}

	// Names last: they depend on every upstream's port.
	for i := range c.Upstreams {
		if c.Upstreams[i].Name == "" {
			c.Upstreams[i].Name = defaultUpstreamName(c.Upstreams, i)
		}
	}

	if c.Log.Level == "" {
		c.Log.Level = "info"
	}

	l.defaultDuration(&c.Airgap.ExportInterval, "airgap.export_interval", time.Minute)
	l.defaultDuration(&c.Airgap.ImportInterval, "airgap.import_interval", 5*time.Second)
	if c.Airgap.AckDir == "" && c.Airgap.ImportDir != "" {
		c.Airgap.AckDir = filepath.Join(c.Airgap.ImportDir, "done")
	}
}

func (l *loader) defaultInt(n *int, key string, def int) {
	if !l.set[key] {
		*n = def
	}
}

func (l *loader) defaultDuration(d *Duration, key string, def time.Duration) {
	if !l.set[key] {
		d.Duration = def
	}
}

// defaultUpstreamName names upstream i after its host, or its host and
// port when another upstream shares the host, or its position when even
// that is shared (two accounts on one smarthost).
func defaultUpstreamName(ups []Upstream, i int) string {
	u := ups[i]
	sameHost, sameAddr := false, false
	for j, o := range ups {
		if j != i && o.Host == u.Host {
			sameHost = true
			sameAddr = sameAddr || o.Port == u.Port
		}
	}
	switch {
	case !sameHost:
		return u.Host
	case !sameAddr:
		return u.Address()
	}
	return fmt.Sprintf("upstream%d", i+1)
}
