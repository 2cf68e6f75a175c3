package upstream

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-sasl"
)

// Values of config.Upstream.Auth.
const (
	authNone    = "none"
	authAuto    = "auto"
	authPlain   = "plain"
	authLogin   = "login"
	authCRAMMD5 = "cram-md5"
	authXOAuth2 = "xoauth2"
)

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
	case authPlain, authLogin, authCRAMMD5:
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

// saslClient returns the client for mech, as chosen by chooseMech.
func saslClient(mech, username, password string) sasl.Client {
	switch mech {
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
	if cfg.Auth == authXOAuth2 {
		return fail(`auth = "xoauth2" is not implemented yet`)
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
	// Fetched only now, so a password_command runs only when needed.
	pw, err := password(s.ctx, cfg)
	if err != nil {
		return newError(s.ctx, "credentials", err)
	}
	s.log.Debug("authenticating", "mechanism", mech, "username", cfg.Username)
	if err := s.sc.Auth(saslClient(mech, cfg.Username, pw)); err != nil {
		return s.fail("auth", err)
	}
	s.mech = mech
	return nil
}
