package config

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/outboxmta/outbox/internal/address"
)

// validate checks the defaulted configuration. It deliberately does not
// look at the filesystem: secrets, certificates and users files are read
// when used, and the example config must load on a machine that has none.
func (l *loader) validate(c *Config) {
	l.name("hostname", c.Hostname)
	if c.Domain != c.Hostname { // else it was defaulted, and hostname's error says it all
		l.name("domain", c.Domain)
	}
	if a := c.Postmaster; a != "" {
		if err := address.Valid(a); err != nil {
			l.errorf("postmaster", "%q is not a full mail address: %v", a, err)
		}
	}
	if c.MaxMessageSize < 1<<10 {
		l.errorf("max_message_size", "%s is too small (minimum 1KiB)", c.MaxMessageSize)
	}
	if c.MaxRecipients < 1 {
		l.errorf("max_recipients", "must be at least 1, got %d", c.MaxRecipients)
	}

	l.absolute("spool.dir", c.Spool.Dir)
	l.positive("spool.retry_min", c.Spool.RetryMin)
	l.positive("spool.retry_max", c.Spool.RetryMax)
	l.positive("spool.lifetime", c.Spool.Lifetime)
	if c.Spool.RetryMin.Duration > c.Spool.RetryMax.Duration {
		l.errorf("spool.retry_min", "%s is longer than retry_max (%s)", c.Spool.RetryMin, c.Spool.RetryMax)
	}
	l.absolute("sendmail.socket", c.Sendmail.Socket)
	if a := c.Masquerade.Sender; a != "" {
		if err := address.Valid(a); err != nil {
			l.errorf("masquerade.sender", "%q is not a full mail address: %v", a, err)
		}
	}

	for i := range c.Listeners {
		l.listener(c, i)
	}

	if len(c.Upstreams) == 0 && c.Airgap.ExportDir == "" {
		l.report("upstream", "", "no [[upstream]] table: at least one upstream smarthost is required")
	}
	names := map[string]int{}
	anySender := false
	for i := range c.Upstreams {
		anySender = anySender || len(c.Upstreams[i].Senders) == 0
		u, p := &c.Upstreams[i], fmt.Sprintf("upstream[%d]", i)
		if j, dup := names[u.Name]; dup {
			l.errorf(p+".name", "%q is already upstream[%d]; names must be unique", u.Name, j)
		}
		names[u.Name] = i
		l.upstream(u, p)
	}
	if len(c.Upstreams) > 0 && !anySender {
		l.errorf("upstream[0].senders", "every [[upstream]] lists senders: mail from other senders, and bounces, would have nowhere to go; add an [[upstream]] without senders")
	}

	for _, k := range sortedKeys(c.Aliases) {
		if k == "" {
			l.report(joinKey("aliases", k), "aliases", "empty alias name")
		} else if strings.TrimSpace(c.Aliases[k]) == "" {
			l.errorf(joinKey("aliases", k), "empty target address")
		}
	}

	if a := c.Metrics.Address; a != "" {
		if err := hostPort(a); err != nil {
			l.errorf("metrics.address", "%v", err)
		}
	}
	l.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	l.airgap(&c.Airgap)
}

func (l *loader) airgap(a *Airgap) {
	for key, path := range map[string]string{"signing_key_file": a.SigningKeyFile,
		"export_dir": a.ExportDir, "import_dir": a.ImportDir, "ack_dir": a.AckDir} {
		if path != "" {
			l.absolute("airgap."+key, path)
		}
	}
	same := func(a, b string) bool { return a != "" && b != "" && filepath.Clean(a) == filepath.Clean(b) }
	if same(a.ImportDir, a.ExportDir) {
		l.errorf("airgap.import_dir", "must differ from export_dir: the relay would import its own bundles")
	}
	if same(a.AckDir, a.ImportDir) {
		l.errorf("airgap.ack_dir", "must differ from import_dir, where the acknowledgements would be read back in")
	}
	l.positive("airgap.export_interval", a.ExportInterval)
	l.positive("airgap.import_interval", a.ImportInterval)
	for i, k := range a.TrustedKeys {
		if filepath.IsAbs(k) {
			continue
		}
		if raw, err := base64.StdEncoding.DecodeString(k); err != nil || len(raw) != 32 {
			l.errorf(fmt.Sprintf("airgap.trusted_keys[%d]", i), "%q is neither the base64 of an ed25519 public key nor an absolute path", k)
		}
	}
}

func (l *loader) listener(c *Config, i int) {
	ln, p := &c.Listeners[i], fmt.Sprintf("listener[%d]", i)
	switch {
	case ln.Address == "":
		l.errorf(p+".address", `is required ("host:port" or an absolute path)`)
	case ln.IsUnix():
	default:
		if err := hostPort(ln.Address); err != nil {
			l.errorf(p+".address", "%v (want \"host:port\" or an absolute path)", err)
		}
	}
	for j := range i {
		if ln.Address != "" && c.Listeners[j].Address == ln.Address {
			l.errorf(p+".address", "%q is already listener[%d]", ln.Address, j)
		}
	}

	if l.oneOf(p+".tls", ln.TLS, "none", "starttls", "implicit") && ln.TLS != "none" {
		l.required(p+".cert_file", ln.CertFile, p+".tls", ln.TLS)
		l.required(p+".key_file", ln.KeyFile, p+".tls", ln.TLS)
	}
	if l.oneOf(p+".auth", ln.Auth, "none", "optional", "required") && ln.Auth != "none" {
		l.required(p+".users_file", ln.UsersFile, p+".auth", ln.Auth)
	}

	ln.Networks = make([]netip.Prefix, 0, len(ln.AllowNetworks))
	for j, s := range ln.AllowNetworks {
		n, err := parseNetwork(s)
		if err != nil {
			l.errorf(fmt.Sprintf("%s.allow_networks[%d]", p, j), "%q is neither a network (CIDR) nor an address", s)
			continue
		}
		ln.Networks = append(ln.Networks, n)
	}
	if len(ln.AllowNetworks) == 0 && ln.Auth == "none" && !ln.IsUnix() {
		l.errorf(p+".allow_networks", `is empty and auth is "none": no client could send mail`)
	}
	l.atLeastOne(p+".max_sessions", ln.MaxSessions)
	l.atLeastOne(p+".max_sessions_per_client", ln.MaxSessionsPerClient)
	l.atLeastOne(p+".max_errors", ln.MaxErrors)
	l.positive(p+".timeout", ln.Timeout)
}

// parseNetwork accepts a CIDR prefix or a bare address, meaning just that
// host, because "10.1.2.3" in an allow list plainly means that one host.
func parseNetwork(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (l *loader) upstream(u *Upstream, p string) {
	switch {
	case u.Host == "":
		l.errorf(p+".host", "is required")
	case strings.Contains(u.Host, ":") && net.ParseIP(u.Host) == nil:
		if h, port, err := net.SplitHostPort(u.Host); err == nil {
			l.errorf(p+".host", "%q includes a port; write host = %q and port = %s", u.Host, h, port)
		} else {
			l.errorf(p+".host", "%q is not a host name or IP address", u.Host)
		}
	}
	if u.Port < 1 || u.Port > 65535 {
		l.errorf(p+".port", "%d is out of range 1..65535", u.Port)
	}
	l.oneOf(p+".tls", u.TLS, "implicit", "starttls", "opportunistic", "none")
	authOK := l.oneOf(p+".auth", u.Auth, "auto", "plain", "login", "cram-md5", "xoauth2", "oauthbearer", "none")

	var secrets []string
	if u.Password != "" {
		secrets = append(secrets, "password")
	}
	if u.PasswordFile != "" {
		secrets = append(secrets, "password_file")
	}
	if len(u.PasswordCommand) > 0 {
		secrets = append(secrets, "password_command")
		if u.PasswordCommand[0] == "" {
			l.errorf(p+".password_command", "the command name is empty")
		}
	}
	if c := u.PasswordCredential; c != "" {
		secrets = append(secrets, "password_credential")
		if c == "." || c == ".." || strings.ContainsAny(c, "/\x00") {
			l.errorf(p+".password_credential", "%q is not a credential name (a file name in $CREDENTIALS_DIRECTORY, without /)", c)
		}
	}
	if len(secrets) > 1 {
		l.errorf(p+"."+secrets[1], "only one of password, password_file, password_command and password_credential may be set (also have %s)", secrets[0])
	}

	switch {
	case !authOK:
	case len(secrets) > 0 && u.Username == "":
		l.errorAt(p+"."+secrets[0], p+".username", "is required when %s is set", secrets[0])
	case u.Auth == "none" && u.Username != "":
		l.errorf(p+".auth", `is "none" but username is set; remove one of them`)
	case u.Auth != "none" && u.Username == "":
		l.required(p+".username", u.Username, p+".auth", u.Auth)
	case u.Auth != "none" && len(secrets) == 0 && !u.OAuth2.Enabled():
		l.errorAt(p+".username", p, "username is set but none of password, password_file, password_command or password_credential")
	case u.Auth != "none" && u.TLS == "none" && !u.AllowPlaintextAuth:
		// Refusing here beats failing every delivery later: the relay will
		// not send a password in clear unless told to.
		l.errorf(p+".tls", `is "none", so AUTH would send the password in clear; set allow_plaintext_auth = true to allow it`)
	}

	l.validateOAuth2(u, p)
	for j, snd := range u.Senders {
		if err := address.Valid(senderAddress(snd)); err != nil {
			l.errorf(fmt.Sprintf("%s.senders[%d]", p, j), "%q is neither a domain nor a mail address", snd)
		}
	}

	l.positive(p+".connect_timeout", u.ConnectTimeout)
	l.positive(p+".command_timeout", u.CommandTimeout)
	l.positive(p+".data_timeout", u.DataTimeout)
	l.atLeast(p+".max_messages_per_connection", u.MaxMessagesPerConnection, 1)
	l.atLeast(p+".max_connections", u.MaxConnections, 1)
	l.atLeast(p+".messages_per_minute", u.MessagesPerMinute, 0)
}

func (l *loader) oneOf(key, v string, allowed ...string) bool {
	if slices.Contains(allowed, v) {
		return true
	}
	want := strings.Join(allowed[:len(allowed)-1], ", ") + " or " + allowed[len(allowed)-1]
	l.errorf(key, "unknown value %q (want %s)", v, want)
	return false
}

// required reports key as missing at the line of the key that needs it.
func (l *loader) required(key, v, because, becauseValue string) {
	if v == "" {
		l.errorAt(because, key, "is required when %s = %q", because[strings.LastIndexByte(because, '.')+1:], becauseValue)
	}
}

func (l *loader) absolute(key, path string) {
	if !filepath.IsAbs(path) {
		l.errorf(key, "must be an absolute path, got %q", path)
	}
}

func (l *loader) atLeastOne(key string, n int) {
	if n < 1 {
		l.errorf(key, "must be at least 1, got %d", n)
	}
}

func (l *loader) atLeast(key string, n, least int) {
	if n < least {
		l.errorf(key, "%d is less than %d", n, least)
	}
}

func (l *loader) positive(key string, d Duration) {
	if d.Duration <= 0 {
		l.errorf(key, "must be longer than zero")
	}
}

// name checks an EHLO/domain name just enough to keep it from breaking the
// SMTP command line it is sent in.
func (l *loader) name(key, v string) {
	if v == "" {
		l.errorf(key, "must not be empty")
	} else if strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '@' }) {
		l.errorf(key, "%q is not a host or domain name", v)
	}
}

func hostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %w", addr, unwrapAddrError(err))
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number in 1..65535", addr, port)
	}
	return nil
}

// unwrapAddrError drops net.AddrError's repetition of the address.
func unwrapAddrError(err error) error {
	if ae, ok := err.(*net.AddrError); ok {
		return fmt.Errorf("%s", ae.Err)
	}
	return err
}

// senderAddress turns a senders entry into an address to check: a domain
// ("example.org" or "@example.org") gets a placeholder local part.
func senderAddress(s string) string {
	if i := strings.IndexByte(s, '@'); i <= 0 {
		return "x@" + s[i+1:]
	}
	return s
}
