package oauthtest

import (
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// ErrBadToken is the final reply to a refused token.
var ErrBadToken = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Username and Password not accepted"}

// BearerServer is a SASL server for XOAUTH2 and OAUTHBEARER written from
// the specifications (Google's XOAUTH2 page, RFC 7628), independent of
// the client under test. A refused token gets the JSON error challenge,
// and the final 535 only after the client's dummy answer (an empty line
// for XOAUTH2, %x01 for OAUTHBEARER).
type BearerServer struct {
	mech   string
	ok     func(user, token string) bool
	set    func(user string)
	failed bool
}

// NewBearerServer returns a server for mech ("XOAUTH2" or "OAUTHBEARER")
// that accepts the user and token ok approves and then calls set.
func NewBearerServer(mech string, ok func(user, token string) bool, set func(user string)) *BearerServer {
	return &BearerServer{mech: mech, ok: ok, set: set}
}

func (b *BearerServer) Next(resp []byte) ([]byte, bool, error) {
	if b.failed {
		want := ""
		if b.mech == sasl.OAuthBearer {
			want = "\x01"
		}
		if string(resp) != want {
			return nil, true, errors.New("bad answer to the error challenge")
		}
		return nil, true, ErrBadToken
	}
	if resp == nil {
		return []byte{}, false, nil
	}
	user, token, parsed := ParseBearer(b.mech, string(resp))
	if !parsed || b.ok == nil || !b.ok(user, token) {
		b.failed = true
		return []byte(`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`), false, nil
	}
	b.set(user)
	return nil, true, nil
}

// ParseBearer takes an XOAUTH2 or OAUTHBEARER initial response apart.
func ParseBearer(mech, s string) (user, token string, ok bool) {
	if mech == sasl.OAuthBearer {
		var gs2, authzid string
		if gs2, s, ok = strings.Cut(s, ","); !ok || gs2 != "n" {
			return "", "", false
		}
		if authzid, s, ok = strings.Cut(s, ","); !ok || !strings.HasPrefix(authzid, "a=") {
			return "", "", false
		}
		user = strings.NewReplacer("=2C", ",", "=3D", "=").Replace(authzid[2:])
		if !strings.HasPrefix(s, "\x01") {
			return "", "", false
		}
		s = s[1:]
	} else {
		if !strings.HasPrefix(s, "user=") {
			return "", "", false
		}
		user, s, _ = strings.Cut(s[len("user="):], "\x01")
	}
	if !strings.HasSuffix(s, "\x01\x01") {
		return "", "", false
	}
	for _, kv := range strings.Split(strings.TrimSuffix(s, "\x01\x01"), "\x01") {
		if t, found := strings.CutPrefix(kv, "auth=Bearer "); found {
			token = t
		}
	}
	return user, token, token != ""
}

// Mailbox is an SMTP server (STARTTLS, AUTH XOAUTH2 and OAUTHBEARER) that
// takes mail only from User with a token Valid approves.
type Mailbox struct {
	User  string
	Valid func(token string) bool

	mu       sync.Mutex
	messages []string // sender and recipients, "from>to,to"
	authOK   int
	authFail int
}

// Start serves m on a loopback port with tlsCfg for STARTTLS and returns
// the port. It stops when the test ends.
func (m *Mailbox) Start(t testing.TB, tlsCfg *tls.Config) int {
	s := smtp.NewServer(m)
	s.Domain = "mx.test"
	s.TLSConfig = tlsCfg
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	s.ErrorLog = log.New(io.Discard, "", 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// Counts returns the messages received and the AUTH successes and failures.
func (m *Mailbox) Counts() (messages, authOK, authFail int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.messages), m.authOK, m.authFail
}

func (m *Mailbox) NewSession(*smtp.Conn) (smtp.Session, error) { return &mboxSession{m: m}, nil }

type mboxSession struct {
	m    *Mailbox
	user string
	txn  string
}

func (s *mboxSession) AuthMechanisms() []string { return []string{"XOAUTH2", sasl.OAuthBearer} }

func (s *mboxSession) Auth(mech string) (sasl.Server, error) {
	if mech != "XOAUTH2" && mech != sasl.OAuthBearer {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return NewBearerServer(mech, func(user, token string) bool {
		ok := user == s.m.User && s.m.Valid(token)
		s.m.mu.Lock()
		defer s.m.mu.Unlock()
		if ok {
			s.m.authOK++
		} else {
			s.m.authFail++
		}
		return ok
	}, func(u string) { s.user = u }), nil
}

func (s *mboxSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.user == "" {
		return smtp.ErrAuthRequired
	}
	s.txn = from + ">"
	return nil
}

func (s *mboxSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.txn += to + ","
	return nil
}

func (s *mboxSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.m.messages = append(s.m.messages, s.txn)
	return nil
}

func (s *mboxSession) Reset()        { s.txn = "" }
func (s *mboxSession) Logout() error { return nil }
