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
)

// Prompt is what the user must do to authorize: open URI and enter Code.
type Prompt struct {
	URI, Code string
	Complete  string // URI with the code filled in, if the provider gives one
}

// Authorize runs the device authorization grant (RFC 8628) for the
// upstream u: it gets a code, hands it to show, polls the token endpoint
// until the user has approved (or ctx ends, or the code expires), and
// stores the refresh token in refresh_token_file, owned and moded like
// the file it replaces, else root:outbox 0640 (0600 without that group).
// It returns the path written and the owner given.
func Authorize(ctx context.Context, u config.Upstream, show func(Prompt)) (Owner, error) {
	o := u.OAuth2
	switch {
	case !o.Enabled():
		return Owner{}, fmt.Errorf("upstream %s has no [upstream.oauth2] table", u.Name)
	case o.ClientCredentials():
		return Owner{}, fmt.Errorf("upstream %s uses the client-credentials grant (no refresh_token_file): there is nothing to authorize; `outbox check` tests it", u.Name)
	case o.DeviceAuthURL == "":
		return Owner{}, fmt.Errorf("upstream %s: set oauth2.device_auth_url, the provider's device authorization endpoint", u.Name)
	}
	if _, err := os.Stat(filepath.Dir(o.RefreshTokenFile)); err != nil {
		return Owner{}, fmt.Errorf("refresh_token_file: %w (create the directory, writable by the daemon's user, so it can store rotated tokens)", err)
	}
	c := oauth2.Config{
		ClientID: o.ClientID,
		Endpoint: oauth2.Endpoint{DeviceAuthURL: o.DeviceAuthURL, TokenURL: o.TokenURL, AuthStyle: oauth2.AuthStyleInParams},
		Scopes:   o.Scopes,
	}
	if o.ClientSecretFile != "" {
		secret, err := ReadSecret("client_secret_file", o.ClientSecretFile)
		if err != nil {
			return Owner{}, err
		}
		c.ClientSecret = secret
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Timeout: httpTimeout})
	da, err := c.DeviceAuth(ctx)
	if err != nil {
		return Owner{}, fmt.Errorf("device authorization at %s: %w", o.DeviceAuthURL, retrieveText(err))
	}
	show(Prompt{URI: da.VerificationURI, Code: da.UserCode, Complete: da.VerificationURIComplete})
	tok, err := c.DeviceAccessToken(ctx, da)
	if err != nil {
		return Owner{}, fmt.Errorf("waiting for approval: %w", retrieveText(err))
	}
	if tok.RefreshToken == "" {
		return Owner{}, errors.New("the provider sent no refresh token (Microsoft sends one only with the offline_access scope)")
	}
	owner := ExistingOwner(o.RefreshTokenFile, newOwner())
	if err := WriteSecret(o.RefreshTokenFile, tok.RefreshToken, owner); err != nil {
		return Owner{}, fmt.Errorf("storing the refresh token: %w", err)
	}
	return ExistingOwner(o.RefreshTokenFile, owner), nil
}

// newOwner is the owner of a new refresh token file: root:outbox 0640 as
// in the packaging table, so the daemon (group outbox) can read it;
// without that group, the caller's, 0600.
func newOwner() Owner {
	if g, err := user.LookupGroup(daemonGroup); err == nil {
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
