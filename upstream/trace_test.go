package upstream

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/outboxmta/outbox/internal/testutil"
)

// TestTraceToLog: with trace = true the dialogue goes to the log, one
// record per line at info level, each with the upstream's name, the
// connection and the queue ID of the message it is about; AUTH secrets
// and message data never appear, in clear or base64.
func TestTraceToLog(t *testing.T) {
	p := testutil.NewPKI(t, "Outbox Test CA")
	const user, pass = "user@example.org", "Hunter2-very-secret"
	secrets := []string{
		pass,
		base64.StdEncoding.EncodeToString([]byte(pass)),
		base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass)),
		base64.StdEncoding.EncodeToString([]byte(user)),
		"not for the log",
	}
	for _, mech := range []string{"plain", "login"} {
		t.Run(mech, func(t *testing.T) {
			be := &backend{users: map[string]string{user: pass}}
			host, port := startServer(t, be, serverOpts{tls: "starttls", pki: p})
			cfg := reuseCfg(host, port)
			cfg.Name, cfg.Trace = "relay1", true
			cfg.TLS, cfg.CAFile, cfg.TLSServerName = "starttls", p.CAFile, "localhost"
			cfg.Auth, cfg.Username, cfg.Password = mech, user, pass
			logs := &testutil.SyncBuffer{}
			c := New(cfg, "client.test", testLogger(logs))
			for i := range 2 {
				m := msg(i)
				m.Body = strings.NewReader("Subject: x\r\n\r\nnot for the log\r\n")
				mustDeliver(t, c, m)
			}
			c.Close()
			out := logs.String()
			if !strings.Contains(out, "<redacted>") {
				t.Errorf("no redacted AUTH line in the log:\n%s", out)
			}
			for _, s := range secrets {
				if strings.Contains(out, s) {
					t.Errorf("log contains %q:\n%s", s, out)
				}
			}
			for _, want := range []string{
				`level=INFO msg=smtp upstream=relay1 conn=1 id=q0 line="C: STARTTLS"`,
				`id=q0 line="C: AUTH ` + strings.ToUpper(mech),
				`id=q0 line="C: MAIL FROM:<m0@example.org>`,
				`id=q0 line="C: <message data, `,
				`conn=1 id=q1 line="C: RSET"`,
				`conn=1 id=q1 line="C: MAIL FROM:<m1@example.org>`,
				`conn=1 line="C: QUIT"`,
			} {
				if strings.Count(out, want) != 1 {
					t.Errorf("log has %d records with %s, want 1:\n%s", strings.Count(out, want), want, out)
				}
			}
		})
	}
}
