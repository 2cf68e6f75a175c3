// Package oauthtest has test peers for OAuth2: a token endpoint (refresh
// token, client credentials, device code and authorization code grants,
// with short expiry, rotation and revocation), an authorization endpoint
// (PKCE S256 and a loopback redirect, as Google's), and an SMTP server
// that accepts XOAUTH2 and OAUTHBEARER only with the endpoint's unexpired
// access tokens.
package oauthtest

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// IdP is a fake OAuth2 authorization server. Its fields configure it; set
// them before use or under Lock.
type IdP struct {
	URL          string // base URL: URL+"/token", URL+"/device", URL+"/auth"
	ClientID     string
	ClientSecret string        // "" for a public client
	Expiry       time.Duration // lifetime of access tokens
	Rotate       bool          // every refresh returns a new refresh token and retires the old one
	Down         bool          // answer 503 to everything
	Deny         bool          // the user refuses consent at URL+"/auth"

	mu       sync.Mutex
	refresh  map[string]bool      // valid refresh tokens
	access   map[string]time.Time // access token → expiry
	devices  map[string]*device   // device_code → state
	codes    map[string]authCode  // authorization code → its request
	consent  bool                 // the user has consented once
	requests map[string]int       // grant type → token requests
	scopes   []string             // scope of the last token request
}

type device struct {
	userCode string
	approved bool
}

// NewIdP starts an IdP on the loopback; it stops when the test ends.
func NewIdP(t testing.TB) *IdP {
	p := &IdP{ClientID: "outbox-test", Expiry: time.Hour,
		refresh: map[string]bool{}, access: map[string]time.Time{},
		devices: map[string]*device{}, codes: map[string]authCode{}, requests: map[string]int{}}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// Lock and Unlock guard the configuration fields while the IdP is in use.
func (p *IdP) Lock()   { p.mu.Lock() }
func (p *IdP) Unlock() { p.mu.Unlock() }

// NewRefreshToken issues a refresh token, as a past authorization would.
func (p *IdP) NewRefreshToken() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := "rt-" + random()
	p.refresh[t] = true
	return t
}

// RevokeAll withdraws every refresh token (the user revoked consent).
func (p *IdP) RevokeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refresh = map[string]bool{}
}

// ValidRefresh reports whether t is a refresh token the IdP accepts.
func (p *IdP) ValidRefresh(t string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refresh[t]
}

// ValidAccess reports whether t is an access token that has not expired.
func (p *IdP) ValidAccess(t string) bool { return p.ValidFor(t, 0) }

// ValidFor reports whether the access token t is valid for at least d
// more: a server whose clock is d ahead, or a connection that takes d,
// would still accept it.
func (p *IdP) ValidFor(t string, d time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	exp, ok := p.access[t]
	return ok && time.Now().Add(d).Before(exp)
}

// Tokens returns every access and refresh token issued so far, for
// checking that none leaked into logs.
func (p *IdP) Tokens() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ts []string
	for t := range p.access {
		ts = append(ts, t)
	}
	for t := range p.refresh {
		ts = append(ts, t)
	}
	return ts
}

// Requests returns how many token requests of grant type g were made.
func (p *IdP) Requests(g string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests[g]
}

// Scopes returns the scope parameter of the last token request.
func (p *IdP) Scopes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.scopes
}

// Approve approves the pending device authorization with userCode, as the
// user would in the browser. It reports whether there was one.
func (p *IdP) Approve(userCode string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range p.devices {
		if d.userCode == userCode {
			d.approved = true
			return true
		}
	}
	return false
}

const (
	GrantRefresh = "refresh_token"
	GrantClient  = "client_credentials"
	GrantDevice  = "urn:ietf:params:oauth:grant-type:device_code"
	GrantCode    = "authorization_code"
)

func (p *IdP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Down {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	if r.URL.Path == "/auth" {
		p.authorize(w, r)
		return
	}
	if r.Method != http.MethodPost || r.ParseForm() != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "POST a form")
		return
	}
	id, secret, basic := r.BasicAuth()
	if !basic {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != p.ClientID || r.URL.Path == "/token" && (p.ClientSecret != "" || secret != "") && secret != p.ClientSecret {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
		return
	}
	switch r.URL.Path {
	case "/device":
		code, user := "dc-"+random(), fmt.Sprintf("%04X-%04X", randUint16(), randUint16())
		p.devices[code] = &device{userCode: user}
		writeJSON(w, map[string]any{"device_code": code, "user_code": user,
			"verification_uri": p.URL + "/verify", "expires_in": 300, "interval": 1})
		return
	case "/token":
	default:
		http.NotFound(w, r)
		return
	}
	grant := r.PostForm.Get("grant_type")
	p.requests[grant]++
	p.scopes = strings.Fields(r.PostForm.Get("scope"))
	issueRefresh := false
	switch grant {
	case GrantRefresh:
		rt := r.PostForm.Get("refresh_token")
		if !p.refresh[rt] {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "AADSTS70008: The provided authorization code or refresh token has expired due to inactivity.")
			return
		}
		if p.Rotate {
			delete(p.refresh, rt)
			issueRefresh = true
		}
	case GrantClient:
		if p.ClientSecret == "" {
			oauthError(w, http.StatusUnauthorized, "invalid_client", "client credentials need a secret")
			return
		}
	case GrantDevice:
		d := p.devices[r.PostForm.Get("device_code")]
		switch {
		case d == nil:
			oauthError(w, http.StatusBadRequest, "expired_token", "no such device code")
			return
		case !d.approved:
			oauthError(w, http.StatusBadRequest, "authorization_pending", "waiting for the user")
			return
		}
		delete(p.devices, r.PostForm.Get("device_code"))
		issueRefresh = true
	case GrantCode:
		var ok bool
		if issueRefresh, ok = p.exchange(w, r.PostForm); !ok {
			return
		}
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", grant)
		return
	}
	at := "at-" + random()
	p.access[at] = time.Now().Add(p.Expiry)
	resp := map[string]any{"access_token": at, "token_type": "Bearer", "expires_in": int(p.Expiry.Seconds())}
	if issueRefresh {
		rt := "rt-" + random()
		p.refresh[rt] = true
		resp["refresh_token"] = rt
	}
	writeJSON(w, resp)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func random() string {
	return rand.Text()
}

func randUint16() uint16 {
	var b [2]byte
	rand.Read(b[:])
	return uint16(b[0])<<8 | uint16(b[1])
}
