package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"

	"golang.org/x/oauth2"

	"github.com/outboxmta/outbox/config"
	"github.com/outboxmta/outbox/internal/secret"
)

// Prompt is what the user must do to authorize: open URI and enter Code.
type Prompt struct {
	URI, Code string
	Complete  string // URI with the code filled in, if the provider gives one
}

// Flows of `outbox oauth2 authorize`.
const (
	FlowDevice   = "device"   // device authorization grant, RFC 8628
	FlowAuthCode = "authcode" // authorization code grant with PKCE and a loopback redirect, RFC 8252
)

// DefaultFlow is the flow for o when none is asked for: the authorization
// code for Google, whose device flow does not grant the Gmail scope, and
// for a generic provider that has only an authorization endpoint; the
// device flow otherwise.
func DefaultFlow(o config.OAuth2) string {
	if o.Provider == "google" || o.Provider == "generic" && o.DeviceAuthURL == "" && o.AuthURL != "" {
		return FlowAuthCode
	}
	return FlowDevice
}

// Authorize runs the device authorization grant (RFC 8628) for the
// upstream u: it gets a code, hands it to show, polls the token endpoint
// until the user has approved (or ctx ends, or the code expires), and
// stores the refresh token with storeRefresh. It returns the owner and
// mode the file got.
func Authorize(ctx context.Context, u config.Upstream, show func(Prompt)) (Owner, error) {
	o := u.OAuth2
	if err := authorizable(u); err != nil {
		return Owner{}, err
	}
	if o.DeviceAuthURL == "" {
		return Owner{}, fmt.Errorf("upstream %s: set oauth2.device_auth_url, the provider's device authorization endpoint", u.Name)
	}
	c, err := clientConfig(o)
	if err != nil {
		return Owner{}, err
	}
	ctx = withHTTPClient(ctx)
	da, err := c.DeviceAuth(ctx)
	if err != nil {
		return Owner{}, fmt.Errorf("device authorization at %s: %w", o.DeviceAuthURL, retrieveText(err))
	}
	show(Prompt{URI: da.VerificationURI, Code: da.UserCode, Complete: da.VerificationURIComplete})
	tok, err := c.DeviceAccessToken(ctx, da)
	if err != nil {
		return Owner{}, fmt.Errorf("waiting for approval: %w", retrieveText(err))
	}
	return storeRefresh(o, tok)
}

// authorizable checks that u has a refresh token to authorize, and a
// place to put it, before the user is sent to a browser.
func authorizable(u config.Upstream) error {
	o := u.OAuth2
	switch {
	case !o.Enabled():
		return fmt.Errorf("upstream %s has no [upstream.oauth2] table", u.Name)
	case o.ClientCredentials():
		return fmt.Errorf("upstream %s uses the client-credentials grant (no refresh_token_file): there is nothing to authorize; `outbox check` tests it", u.Name)
	}
	if _, err := os.Stat(filepath.Dir(o.RefreshTokenFile)); err != nil {
		return fmt.Errorf("refresh_token_file: %w (create the directory, writable by the daemon's user, so it can store rotated tokens)", err)
	}
	return nil
}

// clientConfig is the x/oauth2 client for o, with its secret read.
func clientConfig(o config.OAuth2) (oauth2.Config, error) {
	c := oauth2.Config{
		ClientID: o.ClientID,
		Endpoint: oauth2.Endpoint{AuthURL: o.AuthURL, DeviceAuthURL: o.DeviceAuthURL, TokenURL: o.TokenURL, AuthStyle: oauth2.AuthStyleInParams},
		Scopes:   o.Scopes,
	}
	if o.ClientSecretFile != "" {
		secret, err := readSecret("client_secret_file", o.ClientSecretFile)
		if err != nil {
			return c, err
		}
		c.ClientSecret = secret
	}
	return c, nil
}

func withHTTPClient(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Timeout: httpTimeout})
}

// storeRefresh stores the refresh token of tok, from either flow, in
// refresh_token_file, owned and moded like the file it replaces, else
// root:outbox 0640 (0600 without that group), and returns the owner and
// mode the file got.
func storeRefresh(o config.OAuth2, tok *oauth2.Token) (Owner, error) {
	if tok.RefreshToken == "" {
		return Owner{}, errors.New("the provider sent no refresh token (Microsoft sends one only with the offline_access scope)")
	}
	owner := existingOwner(o.RefreshTokenFile, newOwner())
	if err := writeSecret(o.RefreshTokenFile, tok.RefreshToken, owner); err != nil {
		return Owner{}, fmt.Errorf("storing the refresh token: %w", err)
	}
	return existingOwner(o.RefreshTokenFile, owner), nil
}

// newOwner is the owner of a new refresh token file: root:outbox 0640 as
// in the packaging table, so the daemon (group outbox) can read it;
// without that group, the caller's, 0600.
func newOwner() Owner {
	if g, err := user.LookupGroup(secret.DaemonGroup); err == nil {
		if gid, err := strconv.Atoi(g.Gid); err == nil {
			return Owner{UID: os.Geteuid(), GID: gid, Mode: 0o640}
		}
	}
	return Owner{UID: -1, GID: -1, Mode: 0o600}
}

// retrieveText drops the response body x/oauth2 puts into its errors.
func retrieveText(err error) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return err
	}
	if re.ErrorCode == "" {
		if re.Response != nil {
			return errors.New(re.Response.Status)
		}
		return errors.New("token request failed")
	}
	if re.ErrorDescription != "" {
		return fmt.Errorf("%s: %s", re.ErrorCode, re.ErrorDescription)
	}
	return errors.New(re.ErrorCode)
}
