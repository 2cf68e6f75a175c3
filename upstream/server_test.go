package upstream

// Test fixtures: a throwaway PKI, an in-process go-smtp server whose
// backend records what it saw, and raw scripted servers for the cases
// go-smtp's server cannot produce (bad greetings, hangs, dropped
// connections).

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
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

	"github.com/outboxmta/outbox/config"
	"github.com/outboxmta/outbox/internal/oauthtest"
	"github.com/outboxmta/outbox/internal/testutil"
)

// txn is one transaction the test server received completely.
type txn struct {
	from     string
	opts     smtp.MailOptions
	rcpts    []string
	body     []byte
	tls      bool
	user     string
	conn     int // which connection, counted from 1
	rcptOpts []smtp.RcptOptions
}

// backend is a go-smtp Backend that records what it sees and answers as
// configured.
type backend struct {
	users   map[string]string             // AUTH is offered when non-nil
	bearer  func(user, token string) bool // accepts XOAUTH2/OAUTHBEARER tokens
	mechs   []string                      // default PLAIN LOGIN CRAM-MD5
	mailErr error
	rcptErr map[string]error
	dataErr error
	// dataHook, if set, runs in Data after the message arrived and before
	// it is answered; an error it returns is the reply.
	dataHook func(body []byte) error

	mu        sync.Mutex
	conns     int // sessions started (one per connection)
	logouts   int // sessions ended
	events    []string
	txns      []txn
	mails     int // MAIL commands seen
	authTries int
	dataCalls int
	readErrs  int // DATA that did not arrive completely
}

func (be *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	be.mu.Lock()
	defer be.mu.Unlock()
	be.conns++
	return &srvSession{be: be, conn: c, n: be.conns}, nil
}

// counts returns how many connections the server has seen start and end.
func (be *backend) counts() (conns, logouts int) {
	be.mu.Lock()
	defer be.mu.Unlock()
	return be.conns, be.logouts
}

// waitLogouts waits until n sessions have ended.
func (be *backend) waitLogouts(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, l := be.counts(); l >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server saw %d sessions end, waited for %d", func() int { _, l := be.counts(); return l }(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (be *backend) snapshot() (txns []txn, mails, authTries, dataCalls int) {
	be.mu.Lock()
	defer be.mu.Unlock()
	return append([]txn(nil), be.txns...), be.mails, be.authTries, be.dataCalls
}

type srvSession struct {
	be   *backend
	conn *smtp.Conn
	n    int // connection number
	user string
	cur  txn
}

func (s *srvSession) AuthMechanisms() []string {
	if s.be.users == nil {
		return nil
	}
	if s.be.mechs != nil {
		return s.be.mechs
	}
	return []string{sasl.Plain, sasl.Login, "CRAM-MD5"}
}

var errBadCredentials = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}

func (s *srvSession) Auth(mech string) (sasl.Server, error) {
	s.be.mu.Lock()
	s.be.authTries++
	s.be.mu.Unlock()
	check := func(user, pass string) error {
		if pw, ok := s.be.users[user]; !ok || pw != pass {
			return errBadCredentials
		}
		s.user = user
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	case "CRAM-MD5":
		return &cramServer{users: s.be.users, check: func(u string) { s.user = u }}, nil
	case "XOAUTH2", sasl.OAuthBearer:
		return oauthtest.NewBearerServer(mech, s.be.bearer, func(u string) { s.user = u }), nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *srvSession) Mail(from string, opts *smtp.MailOptions) error {
	s.be.mu.Lock()
	s.be.mails++
	s.be.events = append(s.be.events, "mail "+from)
	s.be.mu.Unlock()
	if s.be.mailErr != nil {
		return s.be.mailErr
	}
	_, isTLS := s.conn.TLSConnectionState()
	s.cur = txn{from: from, tls: isTLS, user: s.user, conn: s.n}
	if opts != nil {
		s.cur.opts = *opts
	}
	return nil
}

func (s *srvSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	if err := s.be.rcptErr[to]; err != nil {
		return err
	}
	s.cur.rcpts = append(s.cur.rcpts, to)
	var o smtp.RcptOptions
	if opts != nil {
		o = *opts
	}
	s.cur.rcptOpts = append(s.cur.rcptOpts, o)
	return nil
}

func (s *srvSession) Data(r io.Reader) error {
	body, err := io.ReadAll(r)
	if err == nil && s.be.dataHook != nil {
		if err := s.be.dataHook(body); err != nil {
			return err
		}
	}
	s.be.mu.Lock()
	defer s.be.mu.Unlock()
	s.be.dataCalls++
	if err != nil {
		s.be.readErrs++
		return err
	}
	if s.be.dataErr != nil {
		return s.be.dataErr
	}
	s.cur.body = body
	s.be.txns = append(s.be.txns, s.cur)
	s.be.events = append(s.be.events, "data "+s.cur.from)
	return nil
}

func (s *srvSession) Reset() { s.cur = txn{} }
func (s *srvSession) Logout() error {
	s.be.mu.Lock()
	defer s.be.mu.Unlock()
	s.be.logouts++
	return nil
}

// loginServer is a server for the LOGIN mechanism, which go-sasl lacks.
type loginServer struct {
	step  int
	user  string
	check func(user, pass string) error
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	l.step++
	switch {
	case l.step == 1 && resp == nil:
		return []byte("Username:"), false, nil
	case l.step == 1:
		l.user, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	case l.step == 2:
		l.user = string(resp)
		return []byte("Password:"), false, nil
	}
	return nil, true, l.check(l.user, string(resp))
}

// cramServer is a CRAM-MD5 server (RFC 2195), computed independently of
// the client code under test.
type cramServer struct {
	users     map[string]string
	challenge string
	check     func(user string)
}

func (c *cramServer) Next(resp []byte) ([]byte, bool, error) {
	if c.challenge == "" {
		c.challenge = "<1896.697170952@postoffice.example.net>"
		return []byte(c.challenge), false, nil
	}
	user, digest, _ := strings.Cut(string(resp), " ")
	pw, ok := c.users[user]
	if !ok {
		return nil, true, errBadCredentials
	}
	m := hmac.New(md5.New, []byte(pw))
	m.Write([]byte(c.challenge))
	if hex.EncodeToString(m.Sum(nil)) != digest {
		return nil, true, errBadCredentials
	}
	c.check(user)
	return nil, true, nil
}

type serverOpts struct {
	tls          string // "", "starttls" or "implicit"
	pki          *testutil.PKI
	insecureAuth bool
	utf8         bool
	readTimeout  time.Duration // default 10s
	dsn          bool
	listen       string // default "127.0.0.1:0"
	maxSize      int64  // SIZE limit; default 1 MiB
}

// startServer runs a go-smtp server for be on 127.0.0.1 and returns its
// address.
func startServer(t testing.TB, be *backend, o serverOpts) (string, int) {
	t.Helper()
	s := smtp.NewServer(be)
	s.Domain = "mx.test"
	s.AllowInsecureAuth = o.insecureAuth
	s.EnableSMTPUTF8 = o.utf8
	s.MaxMessageBytes = 1 << 20
	if o.maxSize > 0 {
		s.MaxMessageBytes = o.maxSize
	}
	s.EnableDSN = o.dsn
	s.ReadTimeout = 10 * time.Second
	if o.readTimeout > 0 {
		s.ReadTimeout = o.readTimeout
	}
	s.WriteTimeout = 10 * time.Second
	s.ErrorLog = log.New(io.Discard, "", 0)
	if o.listen == "" {
		o.listen = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", o.listen)
	if err != nil {
		t.Fatal(err)
	}
	switch o.tls {
	case "starttls":
		s.TLSConfig = o.pki.ServerTLS
	case "implicit":
		l = tls.NewListener(l, o.pki.ServerTLS)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	addr := l.Addr().(*net.TCPAddr)
	return "127.0.0.1", addr.Port
}

// fakeServer runs handle for every connection to a raw listener. handle
// should return when done is closed.
func fakeServer(t *testing.T, handle func(c net.Conn, done <-chan struct{})) (string, int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		close(done)
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c, done)
			}()
		}
	}()
	return "127.0.0.1", l.Addr().(*net.TCPAddr).Port
}

// hang accepts connections and never says anything.
func hang(c net.Conn, done <-chan struct{}) { <-done }

func testCfg(host string, port int, mode string) config.Upstream {
	return config.Upstream{
		Host:           host,
		Port:           port,
		TLS:            mode,
		Auth:           "none",
		ConnectTimeout: config.Duration{Duration: 5 * time.Second},
		CommandTimeout: config.Duration{Duration: 5 * time.Second},
		DataTimeout:    config.Duration{Duration: 5 * time.Second},
	}
}

// asError returns err as *Error or fails the test.
func asError(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want *upstream.Error", err, err)
	}
	return e
}
