package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// Defaults must not depend on the machine running the tests.
	osHostname = func() (string, error) { return "testhost", nil }
	os.Exit(m.Run())
}

// upstream is the smallest valid configuration; it takes up lines 1-2.
const upstream = "[[upstream]]\nhost = \"smtp.example.net\"\n"

func parse(t *testing.T, src string) (*Config, error) {
	t.Helper()
	return Parse("/etc/outbox/outbox.toml", []byte(src))
}

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := parse(t, src)
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	return c
}

func TestDefaults(t *testing.T) {
	got := mustParse(t, upstream)
	want := &Config{
		Path:           "/etc/outbox/outbox.toml",
		Hostname:       "testhost",
		Domain:         "testhost",
		MaxMessageSize: 25 << 20,
		MaxRecipients:  1000,
		Spool: Spool{
			Dir:      "/var/spool/outbox",
			RetryMin: Duration{time.Minute},
			RetryMax: Duration{time.Hour},
			Lifetime: Duration{5 * 24 * time.Hour},
		},
		Sendmail:   Sendmail{Socket: "/run/outbox/submit.sock"},
		Masquerade: Masquerade{RewriteFrom: true},
		Listeners:  []Listener{defaultListener("127.0.0.1:25", false), defaultListener("[::1]:25", true)},
		Upstreams: []Upstream{{
			Name:           "smtp.example.net",
			Host:           "smtp.example.net",
			Port:           587,
			TLS:            "starttls",
			TLSServerName:  "smtp.example.net",
			Auth:           "none",
			ConnectTimeout: Duration{30 * time.Second},
			CommandTimeout: Duration{5 * time.Minute},
			DataTimeout:    Duration{10 * time.Minute},

			IdleTimeout:              Duration{5 * time.Second},
			MaxMessagesPerConnection: 100,
			MaxConnections:           4,
		}},
		Log:    Log{Level: "info"},
		Airgap: Airgap{ExportInterval: Duration{time.Minute}, ImportInterval: Duration{5 * time.Second}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", got, want)
	}
}

func TestDefaultsDependOnOtherKeys(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		check func(*Config) string
		want  string
	}{
		{
			"domain follows hostname", `hostname = "mx.example.org"` + "\n" + upstream,
			func(c *Config) string { return c.Domain },
			"mx.example.org",
		},
		{
			"hostname without a dot is kept", `hostname = "box"` + "\n" + upstream,
			func(c *Config) string { return c.Hostname },
			"box",
		},
		{
			"port 465 means implicit TLS", upstream + "port = 465\n",
			func(c *Config) string { return c.Upstreams[0].TLS },
			"implicit",
		},
		{
			"implicit TLS means port 465", upstream + "tls = \"implicit\"\n",
			func(c *Config) string { return c.Upstreams[0].Address() },
			"smtp.example.net:465",
		},
		{
			"other ports mean STARTTLS", upstream + "port = 2525\n",
			func(c *Config) string { return c.Upstreams[0].TLS },
			"starttls",
		},
		{
			"explicit TLS mode and port are kept", upstream + "port = 25\ntls = \"opportunistic\"\n",
			func(c *Config) string { return c.Upstreams[0].TLS + " " + c.Upstreams[0].Address() },
			"opportunistic smtp.example.net:25",
		},
		{
			"username means auth auto", upstream + "username = \"u\"\npassword = \"p\"\n",
			func(c *Config) string { return c.Upstreams[0].Auth },
			"auto",
		},
		{
			"tls_server_name is kept", upstream + "tls_server_name = \"relay.example.net\"\n",
			func(c *Config) string { return c.Upstreams[0].TLSServerName },
			"relay.example.net",
		},
		{
			"empty tls_server_name is the default", upstream + "tls_server_name = \"\"\n",
			func(c *Config) string { return c.Upstreams[0].TLSServerName },
			"smtp.example.net",
		},
		{
			"listener = [] means no SMTP listener", "listener = []\n" + upstream,
			func(c *Config) string { return fmt.Sprint(len(c.Listeners)) },
			"0",
		},
		{
			"a given listener replaces the default", "[[listener]]\naddress = \"/run/outbox/smtp.sock\"\n" + upstream,
			func(c *Config) string {
				return fmt.Sprintf("%d %s %s %s", len(c.Listeners), c.Listeners[0].Address, c.Listeners[0].TLS, c.Listeners[0].Auth)
			},
			"1 /run/outbox/smtp.sock none none",
		},
		{
			"bare addresses are host networks", "[[listener]]\naddress = \"[::1]:2525\"\nallow_networks = [\"10.1.2.3\", \"fd00::1\", \"192.168.7.9/24\"]\n" + upstream,
			func(c *Config) string { return fmtPrefixes(c.Listeners[0].Networks) },
			"10.1.2.3/32 fd00::1/128 192.168.7.0/24",
		},
		{
			"listener limits default in every listener", "[[listener]]\naddress = \":25\"\n[[listener]]\naddress = \"/run/outbox/smtp.sock\"\n" + upstream,
			func(c *Config) string {
				l := c.Listeners[1]
				return fmt.Sprintf("%d %d %d %s", l.MaxSessions, l.MaxSessionsPerClient, l.MaxErrors, l.Timeout)
			},
			"100 20 10 5m0s",
		},
		{
			"listener limits", "[[listener]]\naddress = \":25\"\nmax_sessions = 5\nmax_sessions_per_client = 50\nmax_errors = 1\ntimeout = \"30s\"\n" + upstream,
			func(c *Config) string {
				l := c.Listeners[0]
				return fmt.Sprintf("%d %d %d %s", l.MaxSessions, l.MaxSessionsPerClient, l.MaxErrors, l.Timeout)
			},
			"5 50 1 30s",
		},
		{
			"sizes as integers", "max_message_size = 2048\n" + upstream,
			func(c *Config) string { return c.MaxMessageSize.String() },
			"2KiB",
		},
		{
			"sizes as strings", "max_message_size = \"10MB\"\n" + upstream,
			func(c *Config) string { return c.MaxMessageSize.String() },
			"10MiB",
		},
		{
			"durations with days", "[spool]\nretry_max = \"1d\"\nlifetime = \"1d12h\"\n" + upstream,
			func(c *Config) string { return c.Spool.RetryMax.String() + " " + c.Spool.Lifetime.Duration.String() },
			"1d 36h0m0s",
		},
		{
			"min_free is off by default", upstream,
			func(c *Config) string { return fmt.Sprint(int64(c.Spool.MinFree)) },
			"0",
		},
		{
			"min_free as a size", "[spool]\nmin_free = \"256MB\"\n" + upstream,
			func(c *Config) string { return c.Spool.MinFree.String() },
			"256MiB",
		},
		{
			"inline tables", "spool = { dir = \"/srv/spool\" }\nupstream = [{ host = \"a\" }, { host = \"b\", port = 465 }]\n",
			func(c *Config) string { return c.Spool.Dir + " " + c.Upstreams[1].TLS },
			"/srv/spool implicit",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.check(mustParse(t, tt.src)); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func fmtPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, " ")
}

func TestHostnameUnknown(t *testing.T) {
	defer func(f func() (string, error)) { osHostname = f }(osHostname)
	osHostname = func() (string, error) { return "", errors.New("uname failed") }

	_, err := parse(t, upstream)
	want := `/etc/outbox/outbox.toml: hostname: not set, and the host's name is unknown (uname failed)`
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
	if _, err := parse(t, "hostname = \"h.example\"\n"+upstream); err != nil {
		t.Errorf("with hostname set: %v", err)
	}
}

// TestErrors checks the complete error text, so every case also checks
// that nothing else is reported. Line numbers count from 1 in src.
func TestErrors(t *testing.T) {
	const f = "/etc/outbox/outbox.toml"
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{
			name: "no upstream",
			src:  "hostname = \"h\"\n",
			want: []string{f + ": no [[upstream]] table: at least one upstream smarthost is required"},
		},
		{
			name: "empty upstream list",
			src:  "hostname = \"h\"\nupstream = []\n",
			want: []string{f + ":2: no [[upstream]] table: at least one upstream smarthost is required"},
		},
		{
			name: "upstream host missing",
			src:  "[[upstream]]\nport = 25\n",
			want: []string{f + ":1: upstream[0].host: is required"},
		},
		{
			name: "upstream host with port",
			src:  "[[upstream]]\nhost = \"smtp.example.net:587\"\n",
			want: []string{f + `:2: upstream[0].host: "smtp.example.net:587" includes a port; write host = "smtp.example.net" and port = 587`},
		},
		{
			name: "upstream IPv6 host is fine, port out of range is not",
			src:  "[[upstream]]\nhost = \"2001:db8::1\"\nport = 70000\n",
			want: []string{f + ":3: upstream[0].port: 70000 is out of range 1..65535"},
		},
		{
			name: "upstream connection reuse limits",
			src:  upstream + "max_connections = 0\nmax_messages_per_connection = -1\nmessages_per_minute = -5\n",
			want: []string{
				f + ":3: upstream[0].max_connections: 0 is less than 1",
				f + ":4: upstream[0].max_messages_per_connection: -1 is less than 1",
				f + ":5: upstream[0].messages_per_minute: -5 is less than 0",
			},
		},
		{
			name: "upstream port zero",
			src:  upstream + "port = 0\n",
			want: []string{f + ":3: upstream[0].port: 0 is out of range 1..65535"},
		},
		{
			name: "upstream tls",
			src:  upstream + "tls = \"startls\"\n",
			want: []string{f + `:3: upstream[0].tls: unknown value "startls" (want implicit, starttls, opportunistic or none)`},
		},
		{
			name: "upstream auth",
			src:  upstream + "username = \"u\"\npassword = \"p\"\nauth = \"digest-md5\"\n",
			want: []string{f + `:5: upstream[0].auth: unknown value "digest-md5" (want auto, plain, login, cram-md5, xoauth2, oauthbearer or none)`},
		},
		{
			name: "two password sources",
			src:  upstream + "username = \"u\"\npassword = \"p\"\npassword_file = \"/etc/outbox/pw\"\n",
			want: []string{f + ":5: upstream[0].password_file: only one of password, password_file, password_command and password_credential may be set (also have password)"},
		},
		{
			name: "password_credential and password_file",
			src:  upstream + "username = \"u\"\npassword_file = \"/etc/pw\"\npassword_credential = \"smtp\"\n",
			want: []string{f + ":5: upstream[0].password_credential: only one of password, password_file, password_command and password_credential may be set (also have password_file)"},
		},
		{
			name: "password_credential with a slash",
			src:  upstream + "username = \"u\"\npassword_credential = \"../smtp\"\n",
			want: []string{f + `:4: upstream[0].password_credential: "../smtp" is not a credential name (a file name in $CREDENTIALS_DIRECTORY, without /)`},
		},
		{
			name: "password without username",
			src:  upstream + "password = \"p\"\n",
			want: []string{f + ":3: upstream[0].username: is required when password is set"},
		},
		{
			name: "password_command without username",
			src:  upstream + "password_command = [\"pass\", \"show\", \"smtp\"]\n",
			want: []string{f + ":3: upstream[0].username: is required when password_command is set"},
		},
		{
			name: "empty password_command",
			src:  upstream + "username = \"u\"\npassword_command = [\"\", \"x\"]\n",
			want: []string{f + ":4: upstream[0].password_command: the command name is empty"},
		},
		{
			name: "username with auth none",
			src:  upstream + "username = \"u\"\npassword = \"p\"\nauth = \"none\"\n",
			want: []string{f + `:5: upstream[0].auth: is "none" but username is set; remove one of them`},
		},
		{
			name: "auth without username",
			src:  upstream + "auth = \"plain\"\n",
			want: []string{f + `:3: upstream[0].username: is required when auth = "plain"`},
		},
		{
			name: "username without password",
			src:  upstream + "username = \"u\"\n",
			want: []string{f + ":3: upstream[0]: username is set but none of password, password_file, password_command or password_credential"},
		},
		{
			name: "password in clear",
			src:  upstream + "tls = \"none\"\nport = 25\nusername = \"u\"\npassword = \"p\"\n",
			want: []string{f + `:3: upstream[0].tls: is "none", so AUTH would send the password in clear; set allow_plaintext_auth = true to allow it`},
		},
		{
			name: "password in clear, allowed",
			src:  upstream + "tls = \"none\"\nport = 25\nusername = \"u\"\npassword = \"p\"\nallow_plaintext_auth = true\n",
		},
		{
			name: "zero timeout",
			src:  upstream + "connect_timeout = \"0s\"\n",
			want: []string{f + ":3: upstream[0].connect_timeout: must be longer than zero"},
		},
		{
			name: "second upstream reported by index and line",
			src:  upstream + upstream + "tls = \"tls\"\n",
			want: []string{f + `:5: upstream[1].tls: unknown value "tls" (want implicit, starttls, opportunistic or none)`},
		},
		{
			name: "listener address without port",
			src:  "[[listener]]\naddress = \"localhost\"\n" + upstream,
			want: []string{f + `:2: listener[0].address: "localhost": missing port in address (want "host:port" or an absolute path)`},
		},
		{
			name: "listener relative socket path",
			src:  "[[listener]]\naddress = \"run/outbox.sock\"\n" + upstream,
			want: []string{f + `:2: listener[0].address: "run/outbox.sock": missing port in address (want "host:port" or an absolute path)`},
		},
		{
			name: "listener bad port",
			src:  "[[listener]]\naddress = \"127.0.0.1:smtp\"\n" + upstream,
			want: []string{f + `:2: listener[0].address: "127.0.0.1:smtp": port "smtp" is not a number in 1..65535 (want "host:port" or an absolute path)`},
		},
		{
			name: "listener address missing",
			src:  "[[listener]]\ntls = \"none\"\n" + upstream,
			want: []string{f + `:1: listener[0].address: is required ("host:port" or an absolute path)`},
		},
		{
			name: "duplicate listener",
			src:  "[[listener]]\naddress = \":25\"\n[[listener]]\naddress = \":25\"\n" + upstream,
			want: []string{f + `:4: listener[1].address: ":25" is already listener[0]`},
		},
		{
			name: "listener tls",
			src:  "[[listener]]\naddress = \":25\"\ntls = \"ssl\"\n" + upstream,
			want: []string{f + `:3: listener[0].tls: unknown value "ssl" (want none, starttls or implicit)`},
		},
		{
			name: "listener tls without certificate",
			src:  "[[listener]]\naddress = \":465\"\ntls = \"implicit\"\nkey_file = \"/k\"\n" + upstream,
			want: []string{f + `:3: listener[0].cert_file: is required when tls = "implicit"`},
		},
		{
			name: "listener auth",
			src:  "[[listener]]\naddress = \":587\"\nauth = \"always\"\n" + upstream,
			want: []string{f + `:3: listener[0].auth: unknown value "always" (want none, optional or required)`},
		},
		{
			name: "listener auth without users file",
			src:  "[[listener]]\naddress = \":587\"\nauth = \"required\"\n" + upstream,
			want: []string{f + `:3: listener[0].users_file: is required when auth = "required"`},
		},
		{
			name: "listener auth with users file",
			src:  "[[listener]]\naddress = \":587\"\nauth = \"optional\"\nusers_file = \"/etc/outbox/users\"\nallow_networks = []\n" + upstream,
		},
		{
			name: "listener bad network",
			src:  "[[listener]]\naddress = \":25\"\nallow_networks = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/33\",\n]\n" + upstream,
			want: []string{f + `:5: listener[0].allow_networks[1]: "10.0.0.0/33" is neither a network (CIDR) nor an address`},
		},
		{
			name: "listener nobody may send",
			src:  "[[listener]]\naddress = \":25\"\nallow_networks = []\n" + upstream,
			want: []string{f + `:3: listener[0].allow_networks: is empty and auth is "none": no client could send mail`},
		},
		{
			name: "unix listener needs no networks",
			src:  "[[listener]]\naddress = \"/run/outbox/smtp.sock\"\nallow_networks = []\n" + upstream,
		},
		{
			name: "listener limits of zero",
			src:  "[[listener]]\naddress = \":25\"\nmax_sessions = 0\nmax_sessions_per_client = 0\nmax_errors = -1\ntimeout = \"0s\"\n" + upstream,
			want: []string{
				f + ":3: listener[0].max_sessions: must be at least 1, got 0",
				f + ":4: listener[0].max_sessions_per_client: must be at least 1, got 0",
				f + ":5: listener[0].max_errors: must be at least 1, got -1",
				f + ":6: listener[0].timeout: must be longer than zero",
			},
		},
		{
			name: "listener limits in the second listener",
			src:  "[[listener]]\naddress = \":25\"\n[[listener]]\naddress = \":587\"\nmax_errors = 0\n" + upstream,
			want: []string{f + ":5: listener[1].max_errors: must be at least 1, got 0"},
		},
		{
			name: "retry_min above retry_max",
			src:  "[spool]\nretry_min = \"2h\"\n" + upstream,
			want: []string{f + ":2: spool.retry_min: 2h0m0s is longer than retry_max (1h0m0s)"},
		},
		{
			name: "lifetime zero",
			src:  "[spool]\nlifetime = \"0d\"\n" + upstream,
			want: []string{f + ":2: spool.lifetime: must be longer than zero"},
		},
		{
			name: "relative spool dir",
			src:  "[spool]\ndir = \"spool\"\n" + upstream,
			want: []string{f + `:2: spool.dir: must be an absolute path, got "spool"`},
		},
		{
			name: "relative sendmail socket",
			src:  "[sendmail]\nsocket = \"submit.sock\"\n" + upstream,
			want: []string{f + `:2: sendmail.socket: must be an absolute path, got "submit.sock"`},
		},
		{
			name: "max_recipients zero",
			src:  "max_recipients = 0\n" + upstream,
			want: []string{f + ":1: max_recipients: must be at least 1, got 0"},
		},
		{
			name: "max_message_size too small",
			src:  "max_message_size = \"512\"\n" + upstream,
			want: []string{f + ":1: max_message_size: 512B is too small (minimum 1KiB)"},
		},
		{
			name: "hostname with space",
			src:  "hostname = \"my host\"\n" + upstream,
			want: []string{f + `:1: hostname: "my host" is not a host or domain name`},
		},
		{
			name: "log level",
			src:  upstream + "[log]\nlevel = \"verbose\"\n",
			want: []string{f + `:4: log.level: unknown value "verbose" (want debug, info, warn or error)`},
		},
		{
			name: "metrics address",
			src:  upstream + "[metrics]\naddress = \"9325\"\n",
			want: []string{f + `:4: metrics.address: "9325": missing port in address`},
		},
		{
			name: "aliases",
			src:  upstream + "[aliases]\nroot = \"\"\n\"\" = \"x@example.com\"\npostmaster = \"root\"\n",
			want: []string{
				f + ":4: aliases.root: empty target address",
				f + ":5: aliases: empty alias name",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.src)
			checkErr(t, err, tt.want)
		})
	}
}

func checkErr(t *testing.T, err error, want []string) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("unexpected error:\n%v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want:\n%s", strings.Join(want, "\n"))
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

func TestUnknownAndMistypedKeys(t *testing.T) {
	const f = "/etc/outbox/outbox.toml"
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{
			name: "top level",
			src:  "hostname = \"h\"\nhost_name = \"x\"\nfoo = 1\n" + upstream,
			want: []string{
				f + `:2: unknown key "host_name" (did you mean "hostname"?)`,
				f + `:3: unknown key "foo"`,
			},
		},
		{
			name: "in a table",
			src:  upstream + "[spool]\n\ndir = \"/s\"\nretrymin = \"1m\"\n",
			want: []string{f + `:6: unknown key "spool.retrymin" (did you mean "retry_min"?)`},
		},
		{
			name: "dotted key",
			src:  "spool.retrymin = \"1m\"\n" + upstream,
			want: []string{f + `:1: unknown key "spool.retrymin" (did you mean "retry_min"?)`},
		},
		{
			name: "in the second upstream",
			src:  upstream + "password_file = \"/p\"\nusername = \"u\"\n" + upstream + "# comment\npasword = \"x\"\n",
			want: []string{f + `:8: unknown key "upstream[1].pasword" (did you mean "password"?)`},
		},
		{
			name: "unknown table",
			src:  upstream + "[smtp]\nport = 25\n",
			want: []string{f + `:3: unknown key "smtp"`},
		},
		{
			name: "misnamed array of tables",
			src:  "[[listeners]]\naddress = \":25\"\n" + upstream,
			want: []string{f + `:1: unknown key "listeners" (did you mean "listener"?)`},
		},
		{
			name: "keys are case-sensitive",
			src:  "Hostname = \"h\"\n" + upstream,
			want: []string{f + `:1: unknown key "Hostname" (did you mean "hostname"?)`},
		},
		{
			name: "string for integer",
			src:  upstream + "port = \"587\"\n",
			want: []string{f + `:3: upstream[0].port: expected an integer, got string "587"`},
		},
		{
			name: "integer for string",
			src:  upstream + "tls = 1\n",
			want: []string{f + `:3: upstream[0].tls: expected a string, got integer 1`},
		},
		{
			name: "bad duration text",
			src:  "[spool]\nretry_min = \"1 minute\"\n" + upstream,
			want: []string{f + `:2: spool.retry_min: invalid duration "1 minute": unknown unit " minute" (want e.g. "30s", "15m", "1h30m" or "5d")`},
		},
		{
			name: "listener timeout as a number",
			src:  "[[listener]]\naddress = \":25\"\ntimeout = 300\n" + upstream,
			want: []string{f + `:3: listener[0].timeout: expected a string, got integer 300`},
		},
		{
			name: "listener max_sessions as a string",
			src:  "[[listener]]\naddress = \":25\"\nmax_sessions = \"100\"\n" + upstream,
			want: []string{f + `:3: listener[0].max_sessions: expected an integer, got string "100"`},
		},
		{
			name: "integer for duration",
			src:  "[spool]\nlifetime = 5\n" + upstream,
			want: []string{f + `:2: spool.lifetime: expected a string, got integer 5`},
		},
		{
			name: "negative min_free",
			src:  "[spool]\nmin_free = -1\n" + upstream,
			want: []string{f + `:2: spool.min_free: invalid size -1: negative`},
		},
		{
			name: "negative duration",
			src:  upstream + "data_timeout = \"-1m\"\n",
			want: []string{f + `:3: upstream[0].data_timeout: invalid duration "-1m": negative (want e.g. "30s", "15m", "1h30m" or "5d")`},
		},
		{
			name: "bad size",
			src:  "max_message_size = \"25 megs\"\n" + upstream,
			want: []string{f + `:1: max_message_size: invalid size "25 megs": not a whole number (want a byte count, or a whole number with KB, MB or GB)`},
		},
		{
			name: "float size",
			src:  "max_message_size = 1.5\n" + upstream,
			want: []string{f + `:1: max_message_size: expected an integer or a string such as "25MB", got float`},
		},
		{
			name: "table for string",
			src:  upstream + "[aliases.root]\nto = \"x\"\n",
			want: []string{f + `:3: aliases.root: expected a string, got table`},
		},
		{
			name: "string for table",
			src:  "spool = \"/var/spool/outbox\"\n" + upstream,
			want: []string{f + `:1: spool: expected a table, got string "/var/spool/outbox"`},
		},
		{
			name: "string for array",
			src:  "[[listener]]\naddress = \":25\"\nallow_networks = \"10.0.0.0/8\"\n" + upstream,
			want: []string{f + `:3: listener[0].allow_networks: expected an array, got string "10.0.0.0/8"`},
		},
		{
			name: "integer in string array",
			src:  upstream + "username = \"u\"\npassword_command = [\n  \"cmd\",\n  7,\n]\n",
			want: []string{f + `:6: upstream[0].password_command[1]: expected a string, got integer 7`},
		},
		{
			name: "boolean",
			src:  upstream + "insecure_skip_verify = \"yes\"\n",
			want: []string{f + `:3: upstream[0].insecure_skip_verify: expected true or false, got string "yes"`},
		},
		{
			name: "integer overflow",
			src:  upstream + "port = 99999999999999999\n",
			want: []string{f + `:3: upstream[0].port: 99999999999999999 is out of range 1..65535`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.src)
			checkErr(t, err, tt.want)
		})
	}
}

func TestAllProblemsReported(t *testing.T) {
	src := `hostname = "h"
max_recipients = "many"

[spool]
retrymin = "1m"
lifetime = "5x"

[[upstream]]
host = "a.example"
tls = "startls"

[[upstream]]
host = "b.example"
pasword = "x"
`
	const f = "/etc/outbox/outbox.toml"
	_, err := parse(t, src)
	checkErr(t, err, []string{
		f + `:2: max_recipients: expected an integer, got string "many"`,
		f + `:5: unknown key "spool.retrymin" (did you mean "retry_min"?)`,
		f + `:6: spool.lifetime: invalid duration "5x": unknown unit "x" (want e.g. "30s", "15m", "1h30m" or "5d")`,
		f + `:10: upstream[0].tls: unknown value "startls" (want implicit, starttls, opportunistic or none)`,
		f + `:14: unknown key "upstream[1].pasword" (did you mean "password"?)`,
	})

	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("errors.As(%T, *Error) = false", err)
	}
	if e.File != f || e.Line != 2 || e.Key != "max_recipients" {
		t.Errorf("first error = %+v", e)
	}
	if u, ok := err.(interface{ Unwrap() []error }); !ok || len(u.Unwrap()) != 5 {
		t.Errorf("want 5 joined errors, got %#v", err)
	}
}

func TestSyntaxErrors(t *testing.T) {
	tests := []struct {
		name     string
		src      string
		wantLine int
	}{
		{"unterminated string", "hostname = \"h\n", 1},
		{"missing value", upstream + "port =\n", 3},
		{"duplicate key", upstream + "host = \"again\"\n", 3},
		{"bad table header", "[spool\n" + upstream, 2}, // the library notices at the line end
		{"garbage", upstream + "\n\nthis is not toml\n", 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.src)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got %v, want an *Error", err)
			}
			if e.Line != tt.wantLine || e.File != "/etc/outbox/outbox.toml" || e.Msg == "" {
				t.Errorf("got %+v, want line %d", e, tt.wantLine)
			}
			if prefix := "/etc/outbox/outbox.toml:"; !strings.HasPrefix(err.Error(), prefix) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error text %q: want one line starting %q", err, prefix)
			}
		})
	}
}

func TestLoadExample(t *testing.T) {
	c, err := Load("../config.example.toml")
	if err != nil {
		t.Fatalf("Load:\n%v", err)
	}
	u := c.Upstreams[0]
	checks := []struct {
		what      string
		got, want any
	}{
		{"hostname", c.Hostname, "app1.example.com"},
		{"domain", c.Domain, "example.com"},
		{"max_message_size", c.MaxMessageSize, Size(25 << 20)},
		{"lifetime", c.Spool.Lifetime.Duration, 5 * 24 * time.Hour},
		{"listeners", len(c.Listeners), 1},
		{"listener networks", fmtPrefixes(c.Listeners[0].Networks), "127.0.0.0/8 ::1/128"},
		{"upstreams", len(c.Upstreams), 1},
		{"upstream address", u.Address(), "smtp.example.com:587"},
		{"upstream tls", u.TLS, "starttls"},
		{"upstream tls_server_name", u.TLSServerName, "smtp.example.com"},
		{"upstream auth", u.Auth, "auto"},
		{"upstream password_file", u.PasswordFile, "/etc/outbox/upstream.password"},
		{"upstream data_timeout", u.DataTimeout.Duration, 10 * time.Minute},
		{"alias", c.Aliases["root"], "admin@example.com"},
		{"metrics", c.Metrics.Address, ""},
		{"log level", c.Log.Level, "info"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.what, ch.got, ch.want)
		}
	}
}

// The commented-out lines of the example must be valid too, so that a
// sysadmin who uncomments one gets what the comment promises.
func TestExampleCommentedDefaults(t *testing.T) {
	data, err := os.ReadFile("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	src := string(data)
	for _, line := range []string{
		`# max_message_size = "25MB"`,
		`# max_recipients = 1000`,
		`# min_free = "0"`,
		`# [metrics]`,
		`# address = "127.0.0.1:9325"`,
		`# [log]`,
		`# level = "info"`,
		`# insecure_skip_verify = false`,
		`# allow_plaintext_auth = false`,
	} {
		if !strings.Contains(src, line) {
			t.Fatalf("example no longer contains %q", line)
		}
		src = strings.Replace(src, line, line[2:], 1)
	}
	for line, keys := range map[string]string{
		`# connect_timeout = "30s"; command_timeout = "5m"; data_timeout = "10m"`: "connect_timeout = \"30s\"\ncommand_timeout = \"5m\"\ndata_timeout = \"10m\"",
		`# max_sessions = 100; max_sessions_per_client = 20`:                      "max_sessions = 100\nmax_sessions_per_client = 20\n#",
		`# max_errors = 10; timeout = "5m"`:                                       "max_errors = 10\ntimeout = \"5m\"\n#",
		`# idle_timeout = "5s"`:                                                   `idle_timeout = "5s"`,
		`# max_messages_per_connection = 100`:                                     `max_messages_per_connection = 100`,
		`# max_connections = 4`:                                                   `max_connections = 4`,
		`# messages_per_minute = 0`:                                               `messages_per_minute = 0`,
		`# trace = false`:                                                         `trace = false`,
	} {
		if !strings.Contains(src, line) {
			t.Fatalf("example no longer contains %q", line)
		}
		src = strings.Replace(src, line, keys, 1)
	}
	c, err := Parse("example", []byte(src))
	if err != nil {
		t.Fatalf("uncommented example:\n%v", err)
	}
	if c.Metrics.Address != "127.0.0.1:9325" || c.MaxMessageSize != DefaultMaxMessageSize || c.Spool.MinFree != DefaultSpoolMinFree {
		t.Errorf("uncommented example: metrics %q, max size %s", c.Metrics.Address, c.MaxMessageSize)
	}
	l := c.Listeners[0]
	if l.MaxSessions != DefaultMaxSessions || l.MaxSessionsPerClient != DefaultMaxSessionsPerClient ||
		l.MaxErrors != DefaultMaxErrors || l.Timeout.Duration != DefaultListenerTimeout {
		t.Errorf("uncommented example: listener %+v", l)
	}
	if u := c.Upstreams[0]; u.IdleTimeout.Duration != DefaultUpstreamIdleTimeout ||
		u.MaxMessagesPerConnection != DefaultMaxMessagesPerConnection || u.MaxConnections != DefaultUpstreamMaxConnections {
		t.Errorf("uncommented example: upstream %+v", u)
	}
}

func TestLoadErrors(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.toml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: got %v, want fs.ErrNotExist", err)
	}

	path := filepath.Join(t.TempDir(), "outbox.toml")
	if err := os.WriteFile(path, []byte(upstream+"tls = \"startls\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	want := path + `:3: upstream[0].tls: unknown value "startls" (want implicit, starttls, opportunistic or none)`
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}

func TestResolve(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "OUTBOX_CONFIG" {
				return v
			}
			return ""
		}
	}
	tests := []struct {
		name, flag, env, want string
	}{
		{"flag wins", "/a.toml", "/b.toml", "/a.toml"},
		{"then the environment", "", "/b.toml", "/b.toml"},
		{"then the default", "", "", DefaultPath},
		{"relative flag kept", "outbox.toml", "", "outbox.toml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Resolve(tt.flag, env(tt.env)); got != tt.want {
				t.Errorf("Resolve(%q, env=%q) = %q, want %q", tt.flag, tt.env, got, tt.want)
			}
		})
	}
}

func defaultListener(addr string, optional bool) Listener {
	return Listener{
		Address:       addr,
		Optional:      optional,
		TLS:           "none",
		AllowNetworks: []string{"127.0.0.0/8", "::1/128"},
		Auth:          "none",
		Networks:      []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},

		MaxSessions:          100,
		MaxSessionsPerClient: 20,
		MaxErrors:            10,
		Timeout:              Duration{5 * time.Minute},
	}
}

func TestUpstreamNames(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"host", "[[upstream]]\nhost = \"a.example\"\n[[upstream]]\nhost = \"b.example\"\n",
			[]string{"a.example", "b.example"}},
		{"same host, other port", "[[upstream]]\nhost = \"a.example\"\n[[upstream]]\nhost = \"a.example\"\nport = 465\n",
			[]string{"a.example:587", "a.example:465"}},
		{"same address: two accounts", "[[upstream]]\nhost = \"a.example\"\n[[upstream]]\nhost = \"a.example\"\n",
			[]string{"upstream1", "upstream2"}},
		{"explicit", "[[upstream]]\nname = \"primary\"\nhost = \"a.example\"\n[[upstream]]\nhost = \"a.example\"\n",
			[]string{"primary", "upstream2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, tt.src)
			var got []string
			for _, u := range c.Upstreams {
				got = append(got, u.Name)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("names %q, want %q", got, tt.want)
			}
		})
	}

	_, err := Parse("/etc/outbox/outbox.toml", []byte("[[upstream]]\nname = \"x\"\nhost = \"a.example\"\n[[upstream]]\nname = \"x\"\nhost = \"b.example\"\n"))
	if want := `outbox.toml:5: upstream[1].name: "x" is already upstream[0]; names must be unique`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("duplicate names: got %v, want %q", err, want)
	}
}

func TestAirgap(t *testing.T) {
	const key = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
	c := mustParse(t, upstream+"[airgap]\nsigning_key_file = \"/etc/outbox/airgap.key\"\ntrusted_keys = [\""+key+"\", \"/etc/outbox/peer.pub\"]\n")
	if c.Airgap.SigningKeyFile != "/etc/outbox/airgap.key" || len(c.Airgap.TrustedKeys) != 2 {
		t.Errorf("airgap = %+v", c.Airgap)
	}
	if c.Airgap.ExportInterval.Duration != time.Minute || c.Airgap.ImportInterval.Duration != 5*time.Second || c.Airgap.AckDir != "" {
		t.Errorf("airgap defaults = %+v", c.Airgap)
	}
	// An isolated relay needs no upstream; imports acknowledge beside
	// the bundles by default.
	c = mustParse(t, "[airgap]\nexport_dir = \"/var/spool/outbox-export\"\nimport_dir = \"/srv/in\"\n")
	if len(c.Upstreams) != 0 || c.Airgap.AckDir != "/srv/in/done" {
		t.Errorf("airgap = %+v", c.Airgap)
	}
	_, err := parse(t, "[airgap]\nexport_dir = \"/srv/gap\"\nimport_dir = \"/srv/gap/\"\nack_dir = \"/srv/gap\"\n")
	for _, want := range []string{
		`:3: airgap.import_dir: must differ from export_dir: the relay would import its own bundles`,
		`:4: airgap.ack_dir: must differ from import_dir`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	_, err = parse(t, upstream+"[airgap]\nsigning_key_file = \"airgap.key\"\ntrusted_keys = [\"peer.pub\"]\nimport_dir = \"in\"\nimport_interval = \"0s\"\n")
	for _, want := range []string{
		`:4: airgap.signing_key_file: must be an absolute path, got "airgap.key"`,
		`:5: airgap.trusted_keys[0]: "peer.pub" is neither the base64 of an ed25519 public key nor an absolute path`,
		`:6: airgap.import_dir: must be an absolute path, got "in"`,
		`:7: airgap.import_interval: must be longer than zero`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

func TestUpstreamSenders(t *testing.T) {
	c := mustParse(t, "[[upstream]]\nhost = \"a.example\"\nsenders = [\"Example.org\", \"@example.com\", \"User@Example.net\"]\n[[upstream]]\nhost = \"b.example\"\n")
	if got := c.Upstreams[0].Senders; !reflect.DeepEqual(got, []string{"Example.org", "@example.com", "User@Example.net"}) {
		t.Errorf("senders = %q", got)
	}
	for _, tt := range []struct{ src, want string }{
		{"[[upstream]]\nhost = \"a.example\"\nsenders = [\"example.org\"]\n",
			`outbox.toml:3: upstream[0].senders: every [[upstream]] lists senders`},
		{"[[upstream]]\nhost = \"a.example\"\nsenders = [\"a b\", \"\"]\n[[upstream]]\nhost = \"b.example\"\n",
			`outbox.toml:3: upstream[0].senders[0]: "a b" is neither a domain nor a mail address`},
		{"[[upstream]]\nhost = \"a.example\"\nsenders = [\"ok.example\", \"\"]\n[[upstream]]\nhost = \"b.example\"\n",
			`upstream[0].senders[1]: "" is neither a domain nor a mail address`},
	} {
		_, err := Parse("/etc/outbox/outbox.toml", []byte(tt.src))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: err = %v, want %q", tt.src, err, tt.want)
		}
	}
}

func TestSetTraceAll(t *testing.T) {
	c := mustParse(t, upstream+"trace = true\n"+upstream)
	if !c.Upstreams[0].Trace || c.Upstreams[1].Trace {
		t.Fatalf("trace keys: %v %v", c.Upstreams[0].Trace, c.Upstreams[1].Trace)
	}
	c.SetTraceAll(false)
	if !c.Upstreams[0].Trace || c.Upstreams[1].Trace {
		t.Errorf("SetTraceAll(false) changed trace = true")
	}
	c.SetTraceAll(true)
	if !c.Upstreams[0].Trace || !c.Upstreams[1].Trace || !c.TraceAll {
		t.Errorf("SetTraceAll(true) left an upstream untraced")
	}
}
