package config

import (
	"net"
	"net/url"
	"strings"
)

// OAuth2 is an [upstream.oauth2] table (it follows its [[upstream]]): where
// the bearer token for auth = "xoauth2" or "oauthbearer" comes from.
//
// With refresh_token_file the refresh-token grant is used (a user's
// mailbox, set up once with `outbox oauth2 authorize NAME`); without it
// the client-credentials grant (Microsoft 365 app-only SMTP), which needs
// client_secret_file.
type OAuth2 struct {
	// Provider is "microsoft", "google" or "generic" (the default): the
	// first two fill in the endpoints and scopes.
	Provider string `toml:"provider"`
	// Tenant is the Microsoft Entra tenant (directory ID or a domain).
	// Default "organizations" for the refresh-token grant; the
	// client-credentials grant needs the real one.
	Tenant   string `toml:"tenant"`
	TokenURL string `toml:"token_url"` // default by provider; required for generic
	// DeviceAuthURL is the device authorization endpoint (RFC 8628) that
	// `outbox oauth2 authorize` uses. Default by provider.
	DeviceAuthURL string `toml:"device_auth_url"`
	// AuthURL is the authorization endpoint for the authorization code
	// grant with PKCE and a loopback redirect (`outbox oauth2 authorize
	// --flow=authcode`, the default for Google). Default by provider.
	AuthURL  string `toml:"auth_url"`
	ClientID string `toml:"client_id"`
	// ClientSecretFile holds the client secret; public clients (Microsoft
	// device-code apps) have none. Mode 0600, or 0640 for group outbox.
	ClientSecretFile string `toml:"client_secret_file"`
	// RefreshTokenFile holds the refresh token. The daemon writes a token
	// the provider rotates back to it (a new file renamed over it, same
	// owner and mode), so its directory must be writable by the daemon.
	RefreshTokenFile string `toml:"refresh_token_file"`
	// Scopes default by provider and grant: see defaultOAuth2.
	Scopes []string `toml:"scopes"`
}

// Enabled reports whether the [upstream.oauth2] table was given.
func (o OAuth2) Enabled() bool { return o.Provider != "" }

// ClientCredentials reports whether the client-credentials grant is used.
func (o OAuth2) ClientCredentials() bool { return o.RefreshTokenFile == "" }

// Scopes by provider, for the refresh-token grant and for client
// credentials (where Microsoft wants the resource's ".default").
const (
	MicrosoftSMTPScope   = "https://outlook.office.com/SMTP.Send"
	MicrosoftAppScope    = "https://outlook.office365.com/.default"
	GoogleMailScope      = "https://mail.google.com/"
	microsoftLoginPrefix = "https://login.microsoftonline.com/"
)

func (l *loader) defaultOAuth2(u *Upstream, p string) {
	o := &u.OAuth2
	if !l.set[p+".oauth2"] {
		return
	}
	if o.Provider == "" {
		o.Provider = "generic"
	}
	if u.Auth == "" || u.Auth == "auto" && !l.set[p+".auth"] {
		u.Auth = "xoauth2"
	}
	setScopes := func(s ...string) {
		if !l.set[p+".oauth2.scopes"] {
			o.Scopes = s
		}
	}
	switch o.Provider {
	case "microsoft":
		if o.Tenant == "" && !o.ClientCredentials() {
			o.Tenant = "organizations"
		}
		base := microsoftLoginPrefix + url.PathEscape(o.Tenant) + "/oauth2/v2.0/"
		if o.TokenURL == "" {
			o.TokenURL = base + "token"
		}
		if o.DeviceAuthURL == "" {
			o.DeviceAuthURL = base + "devicecode"
		}
		if o.AuthURL == "" {
			o.AuthURL = base + "authorize"
		}
		if o.ClientCredentials() {
			setScopes(MicrosoftAppScope)
		} else {
			// offline_access: Microsoft returns a refresh token only then.
			setScopes(MicrosoftSMTPScope, "offline_access")
		}
	case "google":
		if o.TokenURL == "" {
			o.TokenURL = "https://oauth2.googleapis.com/token"
		}
		if o.DeviceAuthURL == "" {
			o.DeviceAuthURL = "https://oauth2.googleapis.com/device/code"
		}
		if o.AuthURL == "" {
			o.AuthURL = "https://accounts.google.com/o/oauth2/auth"
		}
		setScopes(GoogleMailScope)
	}
}

func (l *loader) validateOAuth2(u *Upstream, p string) {
	o, q := &u.OAuth2, p+".oauth2"
	if !o.Enabled() {
		return
	}
	if !l.oneOf(q+".provider", o.Provider, "microsoft", "google", "generic") {
		return
	}
	if u.Auth != "xoauth2" && u.Auth != "oauthbearer" {
		l.errorAt(p+".auth", p+".auth", `is %q, but an [upstream.oauth2] table needs "xoauth2" or "oauthbearer"`, u.Auth)
	}
	if o.ClientID == "" {
		l.errorAt(q, q+".client_id", "is required")
	}
	l.tokenURL(q+".token_url", o.TokenURL, true)
	l.tokenURL(q+".device_auth_url", o.DeviceAuthURL, false)
	l.tokenURL(q+".auth_url", o.AuthURL, false)
	for _, f := range []struct{ key, path string }{
		{"client_secret_file", o.ClientSecretFile},
		{"refresh_token_file", o.RefreshTokenFile},
	} {
		if f.path != "" {
			l.absolute(q+"."+f.key, f.path)
		}
	}
	if o.ClientCredentials() {
		switch {
		case o.Provider == "google":
			l.errorAt(q, q+".refresh_token_file", "is required for Google (set it up with `outbox oauth2 authorize %s`)", u.Name)
		case o.ClientSecretFile == "":
			l.errorAt(q, q+".client_secret_file", "is required without refresh_token_file (the client-credentials grant)")
		case o.Provider == "microsoft" && (o.Tenant == "" || o.Tenant == "common" || o.Tenant == "organizations" || o.Tenant == "consumers"):
			l.errorAt(q, q+".tenant", "must name your tenant (directory ID or domain) for the client-credentials grant, got %q", o.Tenant)
		}
	}
	for _, k := range []string{"password", "password_file", "password_command"} {
		if l.set[p+"."+k] {
			l.errorf(p+"."+k, "cannot be used with an [upstream.oauth2] table, which supplies the token")
		}
	}
}

// tokenURL checks an OAuth2 endpoint: https, or http to the loopback only
// (a local proxy or a test), since it carries the secrets.
func (l *loader) tokenURL(key, s string, required bool) {
	if s == "" {
		if required {
			l.errorf(key, "is required (or set provider)")
		}
		return
	}
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Host == "":
		l.errorf(key, "%q is not an absolute URL", s)
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	default:
		l.errorf(key, "%q must be https:// (plain http only to the loopback)", s)
	}
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
