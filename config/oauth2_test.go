package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestOAuth2Defaults(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want OAuth2
		auth string
	}{
		{
			name: "microsoft delegated",
			src: `[[upstream]]
host = "smtp.office365.com"
username = "app@example.com"
[upstream.oauth2]
provider = "microsoft"
client_id = "id"
refresh_token_file = "/var/lib/outbox/m365.token"
`,
			auth: "xoauth2",
			want: OAuth2{Provider: "microsoft", Tenant: "organizations", ClientID: "id",
				TokenURL:         "https://login.microsoftonline.com/organizations/oauth2/v2.0/token",
				DeviceAuthURL:    "https://login.microsoftonline.com/organizations/oauth2/v2.0/devicecode",
				AuthURL:          "https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize",
				RefreshTokenFile: "/var/lib/outbox/m365.token",
				Scopes:           []string{"https://outlook.office.com/SMTP.Send", "offline_access"}},
		},
		{
			name: "microsoft app-only",
			src: `[[upstream]]
host = "smtp.office365.com"
username = "app@example.com"
auth = "oauthbearer"
[upstream.oauth2]
provider = "microsoft"
tenant = "contoso.onmicrosoft.com"
client_id = "id"
client_secret_file = "/etc/outbox/m365.secret"
`,
			auth: "oauthbearer",
			want: OAuth2{Provider: "microsoft", Tenant: "contoso.onmicrosoft.com", ClientID: "id",
				TokenURL:         "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
				DeviceAuthURL:    "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode",
				AuthURL:          "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize",
				ClientSecretFile: "/etc/outbox/m365.secret",
				Scopes:           []string{"https://outlook.office365.com/.default"}},
		},
		{
			name: "google",
			src: `[[upstream]]
host = "smtp.gmail.com"
username = "me@gmail.com"
[upstream.oauth2]
provider = "google"
client_id = "id.apps.googleusercontent.com"
client_secret_file = "/etc/outbox/google.secret"
refresh_token_file = "/var/lib/outbox/google.token"
`,
			auth: "xoauth2",
			want: OAuth2{Provider: "google", ClientID: "id.apps.googleusercontent.com",
				TokenURL:         "https://oauth2.googleapis.com/token",
				DeviceAuthURL:    "https://oauth2.googleapis.com/device/code",
				AuthURL:          "https://accounts.google.com/o/oauth2/auth",
				ClientSecretFile: "/etc/outbox/google.secret", RefreshTokenFile: "/var/lib/outbox/google.token",
				Scopes: []string{"https://mail.google.com/"}},
		},
		{
			name: "generic, loopback http, own scopes",
			src: `[[upstream]]
host = "mail.example.org"
username = "me"
[upstream.oauth2]
token_url = "http://127.0.0.1:8080/token"
client_id = "id"
refresh_token_file = "/var/lib/outbox/token"
scopes = ["smtp"]
`,
			auth: "xoauth2",
			want: OAuth2{Provider: "generic", TokenURL: "http://127.0.0.1:8080/token", ClientID: "id",
				RefreshTokenFile: "/var/lib/outbox/token", Scopes: []string{"smtp"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := mustParse(t, tt.src).Upstreams[0]
			if !reflect.DeepEqual(u.OAuth2, tt.want) || u.Auth != tt.auth {
				t.Errorf("oauth2 = %+v, auth %q\nwant %+v, auth %q", u.OAuth2, u.Auth, tt.want, tt.auth)
			}
		})
	}
	if u := mustParse(t, upstream).Upstreams[0]; u.OAuth2.Enabled() {
		t.Errorf("no [upstream.oauth2] table, but OAuth2 enabled: %+v", u.OAuth2)
	}
}

func TestOAuth2Errors(t *testing.T) {
	const f = "/etc/outbox/outbox.toml"
	head := "[[upstream]]\nhost = \"smtp.example.net\"\nusername = \"u\"\n" // lines 1-3
	tests := []struct {
		name string
		src  string
		want string
	}{
		{"generic without token_url", head + "[upstream.oauth2]\nclient_id = \"id\"\nrefresh_token_file = \"/t\"\n",
			f + ":4: upstream[0].oauth2.token_url: is required (or set provider)"},
		{"plain http elsewhere", head + "[upstream.oauth2]\nclient_id = \"id\"\nrefresh_token_file = \"/t\"\ntoken_url = \"http://idp.example.net/token\"\n",
			f + `:7: upstream[0].oauth2.token_url: "http://idp.example.net/token" must be https:// (plain http only to the loopback)`},
		{"auth_url over plain http", head + "[upstream.oauth2]\nclient_id = \"id\"\nrefresh_token_file = \"/t\"\ntoken_url = \"https://idp.example.net/token\"\nauth_url = \"http://idp.example.net/auth\"\n",
			f + `:8: upstream[0].oauth2.auth_url: "http://idp.example.net/auth" must be https:// (plain http only to the loopback)`},
		{"no client_id", head + "[upstream.oauth2]\nprovider = \"google\"\nrefresh_token_file = \"/t\"\n",
			f + ":4: upstream[0].oauth2.client_id: is required"},
		{"google needs a refresh token", head + "[upstream.oauth2]\nprovider = \"google\"\nclient_id = \"id\"\nclient_secret_file = \"/s\"\n",
			f + ":4: upstream[0].oauth2.refresh_token_file: is required for Google (set it up with `outbox oauth2 authorize smtp.example.net`)"},
		{"client credentials need a secret", head + "[upstream.oauth2]\nprovider = \"microsoft\"\ntenant = \"t\"\nclient_id = \"id\"\n",
			f + ":4: upstream[0].oauth2.client_secret_file: is required without refresh_token_file (the client-credentials grant)"},
		{"client credentials need the tenant", head + "[upstream.oauth2]\nprovider = \"microsoft\"\nclient_id = \"id\"\nclient_secret_file = \"/s\"\n",
			f + `:4: upstream[0].oauth2.tenant: must name your tenant (directory ID or domain) for the client-credentials grant, got ""`},
		{"relative file", head + "[upstream.oauth2]\nprovider = \"microsoft\"\nclient_id = \"id\"\nrefresh_token_file = \"m365.token\"\n",
			f + `:7: upstream[0].oauth2.refresh_token_file: must be an absolute path, got "m365.token"`},
		{"password too", head + "password_file = \"/p\"\n[upstream.oauth2]\nprovider = \"google\"\nclient_id = \"id\"\nrefresh_token_file = \"/t\"\n",
			f + ":4: upstream[0].password_file: cannot be used with an [upstream.oauth2] table, which supplies the token"},
		{"wrong mechanism", head + "auth = \"plain\"\n[upstream.oauth2]\nprovider = \"google\"\nclient_id = \"id\"\nrefresh_token_file = \"/t\"\n",
			f + `:4: upstream[0].auth: is "plain", but an [upstream.oauth2] table needs "xoauth2" or "oauthbearer"`},
		{"unknown provider", head + "[upstream.oauth2]\nprovider = \"yahoo\"\n",
			f + `:5: upstream[0].oauth2.provider: unknown value "yahoo" (want microsoft, google or generic)`},
		{"second upstream's table", "[[upstream]]\nhost = \"a.example.net\"\n" + head + "[upstream.oauth2]\nprovider = \"yahoo\"\n",
			f + `:7: upstream[1].oauth2.provider: unknown value "yahoo" (want microsoft, google or generic)`},
		{"unknown key", head + "[upstream.oauth2]\nprovider = \"google\"\nclient_id = \"id\"\nrefresh_token_file = \"/t\"\nrefresh_token = \"x\"\n",
			f + `:8: unknown key "upstream[0].oauth2.refresh_token"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.src)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error:\n%v\nwant a line:\n%s", err, tt.want)
			}
		})
	}
}
