// Package oauth gets the OAuth2 access tokens an upstream's XOAUTH2 or
// OAUTHBEARER authentication needs, from the [upstream.oauth2] settings:
// the refresh-token grant (a user's mailbox, authorized once with the
// device flow of `outbox oauth2 authorize`) or the client-credentials
// grant (Microsoft 365 app-only SMTP).
//
// A Source caches the access token and refreshes it before it expires. A
// refresh token the provider rotates is written back to refresh_token_file
// at once, so a restart never falls back to a retired token. Failures
// are errors for the delivery attempt, which defers the mail: nothing is
// bounced for want of a token. No token or secret ever appears in an
// error or a log line.
//
// (Not named oauth2, to keep golang.org/x/oauth2 unambiguous.)
package oauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/outboxmta/outbox/config"
)

const (
	// httpTimeout bounds one token request, so an endpoint that hangs
	// does not hold a delivery attempt (which has its own deadline too).
	httpTimeout = 30 * time.Second
	// maxEarly is how long before its expiry a token is replaced at most;
	// short-lived tokens are replaced at half their lifetime.
	maxEarly = 5 * time.Minute
	// noExpiry is how long a token without expires_in is used.
	noExpiry = 5 * time.Minute
)

// Source gives the access tokens for one upstream. It is safe for
// concurrent use; concurrent callers share one token request.
type Source struct {
	name string // the upstream's name, for logs and hints
	cfg  config.OAuth2
	log  *slog.Logger
	http *http.Client
	sem  chan struct{} // one token request at a time

	mu        sync.Mutex
	access    string
	refreshAt time.Time
	fileSeen  string // refresh_token_file's content as last read or written
	unsaved   string // a rotated refresh token not yet written to the file
	dead      string // the refresh token the provider refused
	deadErr   error
	state     state
	lastErr   error
}

// state is the Source's health, for logging once per change.
type state int

const (
	stateOK          state = iota
	stateUnreachable       // network or server error: retried as mail is
	stateRefused           // the grant was refused: needs the administrator
	stateLocal             // a secret file is missing or unsafe
	stateUnsaved           // tokens work, but a rotated refresh token could not be stored
)

// New returns the Source for the upstream u, which has an [upstream.oauth2]
// table. log may be nil.
func New(u config.Upstream, log *slog.Logger) *Source {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Source{
		name: u.Name,
		cfg:  u.OAuth2,
		log:  log.With("upstream", u.Name),
		http: &http.Client{Timeout: httpTimeout},
		sem:  make(chan struct{}, 1),
	}
}

// State reports whether the last token request succeeded (true before
// the first) and the last error; for metrics and health checks.
func (s *Source) State() (ok bool, lastErr error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state == stateOK || s.state == stateUnsaved, s.lastErr
}

// Invalidate drops the cached access token if it is token, which the
// server refused, so that the next connection gets a new one.
func (s *Source) Invalidate(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.access == token {
		s.access = ""
	}
}

// Token returns a valid access token, from the cache or the provider.
func (s *Source) Token(ctx context.Context) (string, error) {
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	case <-ctx.Done():
		return "", context.Cause(ctx)
	}
	s.mu.Lock()
	if s.access != "" && time.Now().Before(s.refreshAt) {
		defer s.mu.Unlock()
		return s.access, nil
	}
	s.mu.Unlock()

	tok, err := s.fetch(ctx)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.access = tok.AccessToken
	s.refreshAt = refreshTime(time.Now(), tok.Expiry)
	s.log.Debug("oauth2: new access token", "refresh_at", s.refreshAt.Format(time.RFC3339))
	return s.access, nil
}

// refreshTime is when a token fetched at now that expires at expiry
// should be replaced: maxEarly before expiry, or half way for short-lived
// tokens.
func refreshTime(now, expiry time.Time) time.Time {
	if expiry.IsZero() {
		return now.Add(noExpiry)
	}
	early := min(maxEarly, expiry.Sub(now)/2)
	return expiry.Add(-early)
}

// fetch asks the token endpoint for a new access token.
func (s *Source) fetch(ctx context.Context) (*oauth2.Token, error) {
	c := clientcredentials.Config{
		ClientID:  s.cfg.ClientID,
		TokenURL:  s.cfg.TokenURL,
		Scopes:    s.cfg.Scopes,
		AuthStyle: oauth2.AuthStyleInParams,
	}
	if s.cfg.ClientSecretFile != "" {
		secret, err := readSecret("client_secret_file", s.cfg.ClientSecretFile)
		if err != nil {
			return nil, s.fail(stateLocal, fmt.Errorf("oauth2: %w", err))
		}
		c.ClientSecret = secret
	}
	var rt string
	if !s.cfg.ClientCredentials() {
		var err error
		if rt, err = s.refreshToken(); err != nil {
			return nil, s.fail(stateLocal, fmt.Errorf("oauth2: %w", err))
		}
		if err := s.deadToken(rt); err != nil {
			return nil, err
		}
		// The refresh-token grant through clientcredentials, which lets
		// us send the scope: Microsoft's v2 endpoint wants it on refresh
		// too (RFC 6749 section 6 makes it optional, and Google needs
		// none).
		c.EndpointParams = map[string][]string{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
		if s.cfg.Provider != "microsoft" {
			c.Scopes = nil
		}
	}
	tok, err := c.Token(context.WithValue(ctx, oauth2.HTTPClient, s.http))
	if err != nil {
		if ctx.Err() != nil {
			// The attempt was cut short: nothing learned about the provider.
			return nil, fmt.Errorf("oauth2: token request canceled: %w", context.Cause(ctx))
		}
		st, err := s.describe(err, rt != "")
		if st == stateRefused && rt != "" {
			s.mu.Lock()
			s.dead, s.deadErr = rt, err
			s.mu.Unlock()
		}
		return nil, s.fail(st, err)
	}
	if tok.AccessToken == "" {
		return nil, s.fail(stateUnreachable, fmt.Errorf("oauth2: %s answered without an access token", s.cfg.TokenURL))
	}
	s.succeed(rt, tok.RefreshToken)
	return tok, nil
}

// refreshToken returns the refresh token to use: the file's, unless we
// hold a rotated one that could not be written yet and nobody has
// replaced the file since.
func (s *Source) refreshToken() (string, error) {
	rt, err := readSecret("refresh_token_file", s.cfg.RefreshTokenFile)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unsaved != "" && rt == s.fileSeen {
		return s.unsaved, nil
	}
	s.fileSeen, s.unsaved = rt, ""
	return rt, nil
}

// deadToken returns the stored error if the provider already refused rt:
// asking again with the same token cannot help, and a new one appears in
// the file when the administrator authorizes again.
func (s *Source) deadToken(rt string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rt == s.dead {
		return s.deadErr
	}
	return nil
}

// describe turns a token request error into one that names the fix and
// holds no secret (x/oauth2's own text includes the response body).
func (s *Source) describe(err error, refresh bool) (state, error) {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		// Network errors name the URL, which holds no secret.
		return stateUnreachable, fmt.Errorf("oauth2: token endpoint unreachable: %w", err)
	}
	what := retrieveText(re).Error()
	status := 0
	if re.Response != nil {
		status = re.Response.StatusCode
	}
	if status >= 500 || status == http.StatusTooManyRequests || re.ErrorCode == "temporarily_unavailable" {
		return stateUnreachable, fmt.Errorf("oauth2: token endpoint %s failed: %s", s.cfg.TokenURL, what)
	}
	switch {
	case refresh && (re.ErrorCode == "invalid_grant" || re.ErrorCode == "interaction_required" || re.ErrorCode == "consent_required"):
		return stateRefused, fmt.Errorf("oauth2: the refresh token was refused (%s); authorize again with: outbox oauth2 authorize %s", what, s.name)
	case refresh:
		return stateRefused, fmt.Errorf("oauth2: token request refused (%s); check client_id, client_secret_file and scopes, then run: outbox oauth2 authorize %s", what, s.name)
	}
	return stateRefused, fmt.Errorf("oauth2: token request refused (%s); check tenant, client_id, client_secret_file, scopes and the app's admin consent", what)
}

// fail records a failure and logs it if the state changed.
func (s *Source) fail(st state, err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.state
	s.state, s.lastErr = st, err
	if st == prev {
		return err
	}
	switch st {
	case stateUnreachable:
		s.log.Warn("oauth2: cannot get an access token; mail for this upstream waits and is retried", "err", err)
	default:
		// The one loud line an administrator must act on.
		s.log.Error("oauth2: cannot get an access token; mail for this upstream waits until this is fixed", "err", err)
	}
	return err
}

// succeed records a token fetched with refresh token used, and stores
// rotated, the refresh token that came with it, if it is new.
func (s *Source) succeed(used, rotated string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.state
	s.state, s.lastErr = stateOK, nil
	if used != "" && (rotated != "" && rotated != used || s.unsaved == used) {
		if rotated == "" {
			rotated = used
		}
		path := s.cfg.RefreshTokenFile
		owner := existingOwner(path, Owner{UID: -1, GID: -1, Mode: 0o600})
		if err := writeSecret(path, rotated, owner); err != nil {
			s.unsaved = rotated
			s.state, s.lastErr = stateUnsaved, fmt.Errorf("oauth2: cannot store the new refresh token in %s: %w", path, err)
			if prev != stateUnsaved {
				s.log.Error("oauth2: the provider replaced the refresh token but it could not be written back; until it is, a restart would use the old one",
					"err", s.lastErr)
			}
			return
		}
		s.fileSeen, s.unsaved = rotated, ""
		s.log.Debug("oauth2: stored the refresh token the provider rotated", "file", path)
	}
	if prev != stateOK {
		s.log.Info("oauth2: access token obtained; mail for this upstream flows again")
	}
}
