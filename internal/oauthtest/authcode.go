package oauthtest

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// authCode is what an authorization code was issued for.
type authCode struct {
	redirectURI string
	challenge   string // S256 code challenge
	refresh     bool   // a refresh token comes with it
}

// authorize is the authorization endpoint, as Google's for an installed
// app: a loopback redirect_uri, PKCE with S256, state echoed. The user's
// sign-in and consent happen at once (or are refused, with Deny). Called
// with mu held.
func (p *IdP) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ru, err := url.Parse(q.Get("redirect_uri"))
	if q.Get("client_id") != p.ClientID || err != nil || ru.Scheme != "http" || !loopback(ru.Hostname()) {
		// Never redirect to an unregistered place: an error page.
		http.Error(w, "Error 400: redirect_uri_mismatch or invalid_client", http.StatusBadRequest)
		return
	}
	fail := func(code, desc string) {
		v := url.Values{"error": {code}, "error_description": {desc}}
		if s := q.Get("state"); s != "" {
			v.Set("state", s)
		}
		http.Redirect(w, r, withQuery(ru, v), http.StatusFound)
	}
	switch {
	case q.Get("response_type") != "code":
		fail("unsupported_response_type", q.Get("response_type"))
	case q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43:
		fail("invalid_request", "PKCE with code_challenge_method=S256 is required")
	case q.Get("state") == "":
		fail("invalid_request", "this test IdP wants a state")
	case p.Deny:
		fail("access_denied", "The user denied access")
	default:
		code := "ac-" + random()
		// Like Google: a refresh token only for offline access, and after
		// the first consent only when consent is asked for again.
		offline := q.Get("access_type") == "offline" && (!p.consent || q.Get("prompt") == "consent")
		p.consent = true
		p.codes[code] = authCode{redirectURI: ru.String(), challenge: q.Get("code_challenge"), refresh: offline}
		http.Redirect(w, r, withQuery(ru, url.Values{"code": {code}, "state": {q.Get("state")}, "scope": {q.Get("scope")}}), http.StatusFound)
	}
}

// exchange checks an authorization_code grant request; it reports
// whether a refresh token comes with the access token, and whether the
// request was good (else it has answered it). Called with mu held.
func (p *IdP) exchange(w http.ResponseWriter, form url.Values) (refresh, ok bool) {
	code := form.Get("code")
	ac, found := p.codes[code]
	delete(p.codes, code) // single use, even when refused
	sum := sha256.Sum256([]byte(form.Get("code_verifier")))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	switch {
	case !found:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Malformed auth code.")
	case form.Get("redirect_uri") != ac.redirectURI:
		oauthError(w, http.StatusBadRequest, "redirect_uri_mismatch", "Bad Request")
	case subtle.ConstantTimeCompare([]byte(challenge), []byte(ac.challenge)) != 1:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid code verifier.")
	default:
		return ac.refresh, true
	}
	return false, false
}

// Consent plays the browser: it opens authURL, as the user signing in
// and allowing access, and returns where the IdP redirects it (not
// followed).
func Consent(authURL string) (*url.URL, error) {
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(authURL)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		return nil, fmt.Errorf("authorization endpoint: %s", resp.Status)
	}
	return resp.Location()
}

func withQuery(u *url.URL, v url.Values) string {
	c := *u
	c.RawQuery = v.Encode()
	return c.String()
}

func loopback(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback() || strings.EqualFold(host, "localhost")
}
