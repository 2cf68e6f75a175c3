package upstream

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-sasl"

	"github.com/outboxmta/outbox/config"
)

// Values of config.Upstream.Auth.
const (
	authNone        = "none"
	authAuto        = "auto"
	authPlain       = "plain"
	authLogin       = "login"
	authCRAMMD5     = "cram-md5"
	authXOAuth2     = "xoauth2"
	authOAuthBearer = "oauthbearer"
)

// TokenSource gives the bearer token for XOAUTH2 and OAUTHBEARER. The
// client asks for one on every connection, so a source caches and
// refreshes as it sees fit; oauth.Source is one. Its errors must not
// contain secrets: they are logged and stored with the message.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// tokenInvalidator is implemented by a TokenSource whose cached token can
// be dropped after the server refused it, so the next connection fetches
// a new one instead of failing until the cached one expires.
type tokenInvalidator interface {
	Invalidate(token string)
}

// passwordToken is the TokenSource without an [upstream.oauth2] table:
// the token is read like a password (password, password_file or
// password_command, msmtp's passwordeval style), afresh on every
// connection, so an outside helper that refreshes the file or prints a
// new token is always picked up.
type passwordToken config.Upstream

func (p *passwordToken) Token(ctx context.Context) (string, error) {
	return password(ctx, config.Upstream(*p))
}

// chooseMech picks the SASL mechanism (upper case, as on the wire) for the
// configured auth setting from what the server advertised.
//
// With "auto" on TLS we prefer PLAIN: it is the standard mechanism, the
// channel protects it, and it alone needs no server-side plaintext
// password database. On a cleartext connection (only reached with
// allow_plaintext_auth) CRAM-MD5 comes first because it at least keeps the
// password itself off the wire.
func chooseMech(auth string, advertised []string, encrypted bool) (string, error) {
	offered := func(m string) bool {
		for _, a := range advertised {
			if strings.EqualFold(a, m) {
				return true
			}
		}
		return false
	}
	var want []string
	switch auth {
	case authAuto:
		want = []string{"PLAIN", "LOGIN", "CRAM-MD5"}
		if !encrypted {
			want = []string{"CRAM-MD5", "PLAIN", "LOGIN"}
		}
	case authPlain, authLogin, authCRAMMD5, authXOAuth2, authOAuthBearer:
		want = []string{strings.ToUpper(auth)}
	default:
		return "", fmt.Errorf("unsupported auth setting %q", auth)
	}
	for _, m := range want {
		if offered(m) {
			return m, nil
		}
	}
	if len(advertised) == 0 {
		return "", errors.New("server does not offer AUTH")
	}
	return "", fmt.Errorf("no usable AUTH mechanism: server offers %s, auth = %q needs %s",
		strings.Join(advertised, " "), auth, strings.Join(want, " or "))
}

// saslClient returns the client for mech, as chosen by chooseMech; for the
// bearer mechanisms password is the token.
func saslClient(mech, username, password string) sasl.Client {
	switch mech {
	case "XOAUTH2", "OAUTHBEARER":
		return &bearerClient{mech: mech, username: username, token: password}
	case "PLAIN":
		return sasl.NewPlainClient("", username, password)
	case "LOGIN":
		return &loginClient{username: username, password: password}
	case "CRAM-MD5":
		return &cramMD5Client{username: username, password: password}
	}
	panic("upstream: no SASL client for " + mech)
}

// loginClient implements the obsolete but widespread LOGIN mechanism.
// go-sasl's client sends the username as an initial response and then
// insists on the exact challenge "Password:"; servers vary (no initial
// response accepted, "password:", other wording), so like msmtp we answer
// by the prompt when it is clear and by position otherwise.
type loginClient struct {
	username, password string
	step               int
}

func (a *loginClient) Start() (string, []byte, error) { return "LOGIN", nil, nil }

func (a *loginClient) Next(challenge []byte) ([]byte, error) {
	a.step++
	prompt := strings.ToLower(string(challenge))
	switch {
	case a.step > 2:
		return nil, sasl.ErrUnexpectedServerChallenge
	case strings.Contains(prompt, "user"):
		return []byte(a.username), nil
	case strings.Contains(prompt, "pass"):
		return []byte(a.password), nil
	case a.step == 1:
		return []byte(a.username), nil
	}
	return []byte(a.password), nil
}

// cramMD5Client implements CRAM-MD5 (RFC 2195): the answer to the
// challenge is "username hex(HMAC-MD5(password, challenge))".
type cramMD5Client struct {
	username, password string
	done               bool
}

func (a *cramMD5Client) Start() (string, []byte, error) { return "CRAM-MD5", nil, nil }

func (a *cramMD5Client) Next(challenge []byte) ([]byte, error) {
	if a.done {
		return nil, sasl.ErrUnexpectedServerChallenge
	}
	a.done = true
	return []byte(a.username + " " + cramMD5(a.password, challenge)), nil
}

// bearerClient implements XOAUTH2 (Google's and Microsoft's) and
// OAUTHBEARER (RFC 7628). Both send the token in the initial response. On
// failure the server sends a 334 challenge holding a base64 JSON error,
// expects a dummy answer (an empty line for XOAUTH2, %x01 for
// OAUTHBEARER) and only then sends its final 5xx, which is what we want
// to report, so Next answers instead of failing (go-sasl's OAUTHBEARER
// client fails, which cancels with "*" and loses the server's reply).
type bearerClient struct {
	mech, username, token string
	challenge             []byte // the server's error details, if any
}

func (a *bearerClient) Start() (string, []byte, error) {
	if a.mech == "XOAUTH2" {
		return a.mech, []byte("user=" + a.username + "\x01auth=Bearer " + a.token + "\x01\x01"), nil
	}
	// RFC 7628 section 3.1: gs2 header with the authorization identity,
	// then the key/value pairs; ",", "=" in the name are escaped (RFC 5801).
	authzid := strings.NewReplacer("=", "=3D", ",", "=2C").Replace(a.username)
	return a.mech, []byte("n,a=" + authzid + ",\x01auth=Bearer " + a.token + "\x01\x01"), nil
}

func (a *bearerClient) Next(challenge []byte) ([]byte, error) {
	if a.challenge != nil {
		return nil, sasl.ErrUnexpectedServerChallenge
	}
	a.challenge = append([]byte{}, challenge...)
	if a.mech == "XOAUTH2" {
		return []byte{}, nil
	}
	return []byte{0x01}, nil
}

// errorDetails summarises the server's JSON error challenge, "" if none:
// {"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}.
func (a *bearerClient) errorDetails() string {
	var e struct{ Status, Scope string }
	if a.challenge == nil || json.Unmarshal(a.challenge, &e) != nil || e.Status == "" {
		return ""
	}
	if e.Scope != "" {
		return fmt.Sprintf("token status %s, scope %s", e.Status, e.Scope)
	}
	return "token status " + e.Status
}

func cramMD5(password string, challenge []byte) string {
	h := hmac.New(md5.New, []byte(password))
	h.Write(challenge)
	return hex.EncodeToString(h.Sum(nil))
}

// auth authenticates s as configured. Every failure is temporary: it is
// about this host's setup, and bouncing mail over it would turn one
// expired password into lost mail.
func (s *session) auth() error {
	cfg := s.c.cfg
	if cfg.Auth == "" || cfg.Auth == authNone {
		return nil
	}
	fail := func(text string) error {
		return &Error{Op: "auth", Temporary: true, Text: text}
	}
	if s.tls == nil && !cfg.AllowPlaintextAuth {
		return fail(`credentials not sent over an unencrypted connection (set tls = "starttls" or "implicit", or allow_plaintext_auth = true)`)
	}
	if cfg.Username == "" {
		return fail("auth is enabled but username is empty")
	}
	_, mechs := s.sc.Extension("AUTH")
	mech, err := chooseMech(cfg.Auth, strings.Fields(mechs), s.tls != nil)
	if err != nil {
		return &Error{Op: "auth", Temporary: true, Text: clean(err.Error()), Err: err}
	}
	// Fetched only now, so a password_command runs (and a token is
	// refreshed) only when needed.
	var tokens TokenSource
	if mech == "XOAUTH2" || mech == "OAUTHBEARER" {
		tokens = s.c.Tokens
		if tokens == nil {
			tokens = (*passwordToken)(&cfg)
		}
	}
	var pw string
	if tokens != nil {
		pw, err = tokens.Token(s.ctx)
	} else {
		pw, err = password(s.ctx, cfg)
	}
	if err != nil {
		return newError(s.ctx, "credentials", err)
	}
	s.log.Debug("authenticating", "mechanism", mech, "username", cfg.Username)
	sc := saslClient(mech, cfg.Username, pw)
	if err := s.sc.Auth(sc); err != nil {
		e := s.fail("auth", err)
		if bc, ok := sc.(*bearerClient); ok {
			if d := bc.errorDetails(); d != "" {
				e.Text += " (" + d + ")"
			}
			if inv, ok := tokens.(tokenInvalidator); ok && e.Code >= 500 {
				inv.Invalidate(pw)
			}
		}
		if h := authHint(e); h != "" {
			e.Text += "; " + h
		}
		return e
	}
	s.mech = mech
	return nil
}

// authHint explains the replies providers give once they have turned off
// password authentication, which otherwise read like a wrong password.
func authHint(e *Error) string {
	if e.Code < 500 {
		return ""
	}
	text := strings.ToLower(e.Text)
	switch {
	case e.Enhanced == "5.7.139", e.Enhanced == "5.7.30",
		strings.Contains(text, "basic authentication is disabled"),
		strings.Contains(text, "basic authentication is not supported"):
		return `the provider has turned off password (basic) authentication: switch to OAuth2 with auth = "xoauth2" and an [upstream.oauth2] table (README: "Microsoft 365")`
	case e.Enhanced == "5.7.9" && strings.Contains(text, "application-specific password"):
		return `the account needs an app password or OAuth2: use auth = "xoauth2" with an [upstream.oauth2] table (README: "Google Workspace / Gmail")`
	}
	return ""
}
