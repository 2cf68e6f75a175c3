// Package config reads and validates Outbox's TOML configuration.
//
// The key names are a contract with users, packaging and docs (see
// docs/design.md): add keys freely, rename none.
package config

import (
	"net"
	"net/netip"
	"strconv"
	"time"
)

// DefaultPath is used when neither --config/-C nor OUTBOX_CONFIG names a file.
const DefaultPath = "/etc/outbox/outbox.toml"

// Config is the whole configuration file after defaults are applied.
type Config struct {
	// Path is the file the configuration was read from.
	Path string `toml:"-"`
	// TraceAll is `outbox serve --trace`: SetTraceAll turns trace on for
	// every upstream.
	TraceAll bool `toml:"-"`

	Hostname string `toml:"hostname"` // EHLO name, Message-ID domain; default os.Hostname()
	Domain   string `toml:"domain"`   // qualifies bare names; default Hostname
	// Postmaster receives the bounces for local senders (no domain, or
	// domain or hostname as theirs) that have no alias: nothing here
	// delivers locally, so a bounce to root@hostname would be lost.
	// Default "": the [aliases] target of "postmaster", else of "root",
	// else postmaster@domain.
	Postmaster string `toml:"postmaster"`

	// MaxMessageSize is the largest message accepted, in bytes (listener and
	// sendmail). Accepts an integer or a string such as "25MB". Default 25 MiB.
	MaxMessageSize Size `toml:"max_message_size"`
	// MaxRecipients per message. Default 1000.
	MaxRecipients int `toml:"max_recipients"`

	Spool    Spool    `toml:"spool"`
	Sendmail Sendmail `toml:"sendmail"`
	// Masquerade rewrites the sender of mail submitted with the sendmail
	// command (not of mail received by the listeners).
	Masquerade Masquerade `toml:"masquerade"`
	// Listeners default to one on 127.0.0.1:25 when no [[listener]] is
	// given; an explicit `listener = []` means sendmail submission only.
	Listeners []Listener        `toml:"listener"`
	Upstreams []Upstream        `toml:"upstream"`
	Aliases   map[string]string `toml:"aliases"`
	Metrics   Metrics           `toml:"metrics"`
	Log       Log               `toml:"log"`
	// Airgap moves mail across an air gap in bundle files (outbox queue
	// export, import, ack; package airgap).
	Airgap Airgap `toml:"airgap"`
}

// Airgap is the [airgap] table.
type Airgap struct {
	// SigningKeyFile is an ed25519 private key (PEM PKCS #8, as from
	// `openssl genpkey -algorithm ed25519`) that signs the bundles and
	// acknowledgements this host writes. Default "": unsigned.
	SigningKeyFile string `toml:"signing_key_file"`
	// TrustedKeys are the ed25519 public keys whose bundles and
	// acknowledgements this host accepts, each the base64 of the key or
	// the absolute path of a file holding it (PEM or base64). When set,
	// unsigned and otherwise signed files are refused. Default: none,
	// anything intact is accepted.
	TrustedKeys []string `toml:"trusted_keys"`

	// ExportDir, on the isolated side, is where the daemon writes a bundle
	// of everything queued every ExportInterval (default 1m), each file
	// appearing whole (written under a dot name, then renamed). With it
	// set, no [[upstream]] is needed: mail leaves only by export.
	ExportDir      string   `toml:"export_dir"`
	ExportInterval Duration `toml:"export_interval"`
	// ImportDir, on the connected side, is polled every ImportInterval
	// (default 5s) for bundles, which are imported and moved to done/ or
	// refused/ under it. Acknowledgements (*.ack) dropped there, on the
	// isolated side at the end of a return link, are applied as by
	// `outbox queue ack`. Files whose names start with a dot or end in
	// .part or .tmp, and files still growing, are left for later.
	ImportDir      string   `toml:"import_dir"`
	ImportInterval Duration `toml:"import_interval"`
	// AckDir is where the daemon's imports write their acknowledgements
	// (a return link, say). Default: ImportDir/done, beside the bundle.
	AckDir string `toml:"ack_dir"`
}

// Spool is the [spool] table.
type Spool struct {
	Dir      string   `toml:"dir"`       // default /var/spool/outbox
	RetryMin Duration `toml:"retry_min"` // default 1m
	RetryMax Duration `toml:"retry_max"` // default 1h
	Lifetime Duration `toml:"lifetime"`  // default 5d
	// MinFree is the free-space reserve: new mail is refused (SMTP 452
	// 4.3.1, sendmail exit 75) while the spool's file system has less than
	// this available, keeping the rest for rewriting queued mail during
	// delivery. Set it above max_message_size. Default 0: off, so a small
	// test file system still works; a full disk is refused cleanly anyway.
	MinFree Size `toml:"min_free"`
}

// Sendmail is the [sendmail] table.
type Sendmail struct {
	Socket string `toml:"socket"` // default /run/outbox/submit.sock
}

// Masquerade is the [masquerade] table.
type Masquerade struct {
	// Sender, when set, becomes the envelope sender of every message
	// submitted with the sendmail command (also -bs), whatever -f or MAIL
	// FROM said; the null sender (bounces, auto-replies) is kept. It must
	// be a full address: "noreply@example.com". Default "": off.
	Sender string `toml:"sender"`
	// RewriteFrom also rewrites the From: header to Sender, keeping its
	// display name, and keeps the original address in a Reply-To: header
	// when the message has none. Default true.
	RewriteFrom bool `toml:"rewrite_from"`
}

// Listener is one [[listener]] table.
type Listener struct {
	// Address is "host:port" or an absolute path for a unix socket.
	Address string `toml:"address"`
	// Optional marks a default listener whose address the host may lack
	// (the IPv6 loopback): it is skipped, with a warning, if it cannot be
	// bound for that reason.
	Optional bool `toml:"-"`
	// TLS is "none" (default), "starttls" or "implicit".
	TLS      string `toml:"tls"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// AllowNetworks lists the client networks that may submit without AUTH,
	// as CIDR prefixes or bare addresses. Default when the key is absent:
	// loopback only (127.0.0.0/8, ::1/128); an explicit [] trusts no network.
	// Unix sockets are always trusted.
	AllowNetworks []string `toml:"allow_networks"`
	// Auth is "none" (default), "optional" or "required".
	Auth      string `toml:"auth"`
	UsersFile string `toml:"users_file"`

	// MaxSessions bounds the concurrent SMTP sessions on this listener:
	// a connection beyond it is answered 421 4.7.0 and closed. Default 100.
	MaxSessions int `toml:"max_sessions"`
	// MaxSessionsPerClient bounds the concurrent sessions from one client
	// IP address; unix socket listeners do not apply it. Default 20.
	MaxSessionsPerClient int `toml:"max_sessions_per_client"`
	// MaxErrors is how many error replies (refused senders, recipients
	// and messages) a session gets before it is closed with 421 4.7.0.
	// Default 10.
	MaxErrors int `toml:"max_errors"`
	// Timeout is how long the listener waits for each command, and for the
	// whole message after DATA, before it closes the session with
	// 421 4.4.2. It changes at restart only. Default 5m.
	Timeout Duration `toml:"timeout"`

	// Networks is AllowNetworks parsed.
	Networks []netip.Prefix `toml:"-"`
}

// IsUnix reports whether the listener is a unix socket path.
func (l Listener) IsUnix() bool { return len(l.Address) > 0 && l.Address[0] == '/' }

// Upstream is one [[upstream]] table: a smarthost.
type Upstream struct {
	// Name identifies the upstream in logs, metrics and commands such as
	// `outbox oauth2 authorize NAME`. Default: host, or host:port when
	// another upstream has the same host. Names are unique.
	Name string `toml:"name"`
	Host string `toml:"host"`
	Port int    `toml:"port"` // default 587, or 465 when tls = "implicit"
	// TLS is "implicit", "starttls", "opportunistic" or "none".
	// Default: "implicit" on port 465, else "starttls".
	TLS                string `toml:"tls"`
	CAFile             string `toml:"ca_file"`
	TLSServerName      string `toml:"tls_server_name"` // default Host
	InsecureSkipVerify bool   `toml:"insecure_skip_verify"`

	Username        string   `toml:"username"`
	Password        string   `toml:"password"`
	PasswordFile    string   `toml:"password_file"`
	PasswordCommand []string `toml:"password_command"`
	// PasswordCredential names a systemd credential holding the password
	// (LoadCredential=NAME:/path or LoadCredentialEncrypted= in the
	// unit), read from $CREDENTIALS_DIRECTORY/NAME when needed.
	PasswordCredential string `toml:"password_credential"`
	// Auth is "auto" (default when a username is set), "plain", "login",
	// "cram-md5", "xoauth2", "oauthbearer" or "none". The bearer
	// mechanisms take the token from the password settings, read afresh
	// for every connection.
	Auth               string `toml:"auth"`
	AllowPlaintextAuth bool   `toml:"allow_plaintext_auth"`
	// OAuth2 is the [upstream.oauth2] table, if any: tokens for XOAUTH2 and
	// OAUTHBEARER fetched and refreshed by Outbox itself.
	OAuth2 OAuth2 `toml:"oauth2"`

	// Senders, when set, reserves this upstream for mail whose envelope
	// sender is listed, as a domain ("example.org", also "@example.org")
	// or a whole address ("user@example.net"), case-insensitively. Such
	// mail goes only to the upstreams listing its sender (in file order,
	// with failover among them; an address beats its domain), all other
	// mail (bounces too) only to the upstreams without senders, of which
	// there must be at least one. Default: empty, any sender.
	Senders []string `toml:"senders"`

	ConnectTimeout Duration `toml:"connect_timeout"` // default 30s
	CommandTimeout Duration `toml:"command_timeout"` // default 5m (RFC 5321 4.5.3.2)
	DataTimeout    Duration `toml:"data_timeout"`    // default 10m (RFC 5321 4.5.3.2, final dot)

	// Connection reuse (upstream/pool.go). A connection stays open for
	// idle_timeout after its last message (default 5s; "0s": close at
	// once) and carries at most max_messages_per_connection messages
	// (default 100). max_connections bounds the connections open to this
	// upstream at once (default 4); deliveries wait for a free one.
	IdleTimeout              Duration `toml:"idle_timeout"`
	MaxMessagesPerConnection int      `toml:"max_messages_per_connection"`
	MaxConnections           int      `toml:"max_connections"`
	// MessagesPerMinute spaces messages to this upstream evenly, for
	// providers with a sending rate limit; 0 (default) is no limit.
	MessagesPerMinute int `toml:"messages_per_minute"`

	// Trace logs the SMTP dialogue with this upstream at info level, one
	// record per line, AUTH secrets and message data left out (also
	// `outbox serve --trace`).
	Trace bool `toml:"trace"`
}

// Address returns "host:port", bracketing IPv6 literals.
// SetTraceAll sets TraceAll and, if true, trace for every upstream.
func (c *Config) SetTraceAll(on bool) {
	c.TraceAll = on
	for i := range c.Upstreams {
		c.Upstreams[i].Trace = c.Upstreams[i].Trace || on
	}
}

func (u Upstream) Address() string {
	return netJoin(u.Host, u.Port)
}

func netJoin(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// Metrics is the [metrics] table.
type Metrics struct {
	Address string `toml:"address"` // Prometheus /metrics and /healthz; empty: off
}

// Log is the [log] table.
type Log struct {
	Level string `toml:"level"` // "debug", "info" (default), "warn", "error"
}

// Duration is a time.Duration that reads "30s", "15m", "1h30m" and also days: "5d".
type Duration struct{ time.Duration }

// Size is a byte count that reads an integer or "10KB", "25MB", "1GB" (powers of 1024).
type Size int64
