package listener

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/outboxmta/outbox/internal/secret"
)

// AuthMode is whether an endpoint offers SMTP AUTH: the listener's `auth` key.
type AuthMode string

const (
	AuthNone     AuthMode = "none"     // no AUTH (also the zero value)
	AuthOptional AuthMode = "optional" // allow_networks submit without AUTH, others after AUTH
	AuthRequired AuthMode = "required" // every TCP client must authenticate
)

func (m AuthMode) on() bool { return m == AuthOptional || m == AuthRequired }

// maxAuthFailures is how many failed AUTH attempts a session gets; after
// that every AUTH is refused without checking, so guessing costs a new
// connection each time.
const maxAuthFailures = 3

var (
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0},
		Message: "Authentication required"}
	errAuthFailed = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8},
		Message: "Authentication credentials invalid"}
	errAuthTooMany = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message: "Too many failed authentication attempts, try again later"}
	errAuthSyntax = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2},
		Message: "Malformed authentication response"}
	errAuthInTransaction = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1},
		Message: "AUTH not permitted during a mail transaction"}
)

// Users are the accounts that may authenticate, read from a users file.
type Users struct {
	path   string
	hashes map[string]passwordHash
	// dummy is checked for unknown users, so that a reply takes as long
	// whether or not the user exists.
	dummy passwordHash
}

type passwordHash interface {
	verify(password []byte) bool
}

// LoadUsers reads a users file: one `user:hash` per line, blank lines and
// lines starting with # ignored. Hashes are bcrypt ($2a$, $2b$, $2y$) or
// argon2id in PHC form ($argon2id$v=19$m=65536,t=3,p=4$salt$hash). A file
// others can read is refused, as for every secret (internal/secret).
func LoadUsers(path string) (*Users, error) {
	b, err := secret.ReadFile("users_file", path)
	if err != nil {
		return nil, err
	}
	u := &Users{path: path, hashes: map[string]passwordHash{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || name == "" || hash == "" {
			return nil, fmt.Errorf("users file %s:%d: want \"user:hash\"", path, n)
		}
		if strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return nil, fmt.Errorf("users file %s:%d: user name %q contains spaces or control characters", path, n, name)
		}
		if _, dup := u.hashes[name]; dup {
			return nil, fmt.Errorf("users file %s:%d: user %q is listed twice", path, n, name)
		}
		h, err := parseHash(hash)
		if err != nil {
			return nil, fmt.Errorf("users file %s:%d: user %q: %v", path, n, name, err)
		}
		u.hashes[name] = h
		if u.dummy == nil {
			u.dummy = h
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	return u, nil
}

// Len returns the number of users.
func (u *Users) Len() int { return len(u.hashes) }

// Verify reports whether password is user's. It costs the same whether or
// not the user exists: an unknown user is checked against another user's
// hash and refused whatever the result.
func (u *Users) Verify(user, password string) bool {
	h, ok := u.hashes[user]
	if !ok {
		if u.dummy != nil {
			u.dummy.verify([]byte(password))
		}
		return false
	}
	return h.verify([]byte(password))
}

func parseHash(s string) (passwordHash, error) {
	switch {
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		if _, err := bcrypt.Cost([]byte(s)); err != nil {
			return nil, fmt.Errorf("malformed bcrypt hash: %v", err)
		}
		return bcryptHash(s), nil
	case strings.HasPrefix(s, "$argon2id$"):
		return parseArgon2id(s)
	}
	return nil, errors.New("unknown hash format (want bcrypt $2a$/$2b$/$2y$ or $argon2id$)")
}

type bcryptHash []byte

func (h bcryptHash) verify(password []byte) bool {
	// bcrypt looks at the first 72 bytes only; refuse longer passwords
	// rather than accept any with the right beginning. The comparison
	// runs anyway, to cost the same.
	ok := bcrypt.CompareHashAndPassword(h, password) == nil
	return ok && len(password) <= 72
}

type argon2idHash struct {
	memory  uint32 // KiB
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

// parseArgon2id reads $argon2id$v=19$m=65536,t=3,p=4$salt$hash (base64,
// padding optional), the form the argon2 command line tool and most
// libraries write.
func parseArgon2id(s string) (passwordHash, error) {
	bad := func(why string) (passwordHash, error) {
		return nil, fmt.Errorf("malformed argon2id hash: %s (want $argon2id$v=19$m=…,t=…,p=…$salt$hash)", why)
	}
	f := strings.Split(s, "$")
	if len(f) != 6 {
		return bad("wrong number of $-separated fields")
	}
	if f[2] != "v=19" {
		return bad("version is not v=19")
	}
	var h argon2idHash
	seen := map[string]bool{}
	for kv := range strings.SplitSeq(f[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || seen[k] {
			return bad("bad parameter " + strconv.Quote(kv))
		}
		seen[k] = true
		switch k {
		case "m":
			h.memory = uint32(n)
		case "t":
			h.time = uint32(n)
		case "p":
			if n > 255 {
				return bad("p is above 255")
			}
			h.threads = uint8(n)
		default:
			return bad("unknown parameter " + strconv.Quote(k))
		}
	}
	switch {
	case h.time < 1 || h.threads < 1:
		return bad("t and p must be at least 1")
	case h.memory < 8*uint32(h.threads):
		return bad("m must be at least 8 × p")
	case h.memory > 4<<20:
		return bad("m is above 4 GiB")
	}
	var err error
	if h.salt, err = decodeB64(f[4]); err != nil || len(h.salt) < 8 {
		return bad("salt is not base64 of at least 8 bytes")
	}
	if h.key, err = decodeB64(f[5]); err != nil || len(h.key) < 16 {
		return bad("hash is not base64 of at least 16 bytes")
	}
	return h, nil
}

func decodeB64(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

func (h argon2idHash) verify(password []byte) bool {
	key := argon2.IDKey(password, h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(key, h.key) == 1
}

// loadFiles returns eps with the certificates and users files they name
// read in. Nothing is changed if any cannot be read.
func (s *Server) loadFiles(eps []Endpoint) ([]Endpoint, error) {
	var cur map[string]Endpoint
	if m := s.endpoints.Load(); m != nil {
		cur = *m
	}
	out := make([]Endpoint, len(eps))
	for i, ep := range eps {
		if ep.TLS == "" {
			ep.TLS = TLSNone
		}
		if ep.Auth == "" {
			ep.Auth = AuthNone
		}
		switch {
		case ep.TLS != TLSNone && !ep.TLS.on():
			return nil, fmt.Errorf("listener %s: unknown tls mode %q", ep.Address, ep.TLS)
		case ep.Auth != AuthNone && !ep.Auth.on():
			return nil, fmt.Errorf("listener %s: unknown auth mode %q", ep.Address, ep.Auth)
		}
		ep.cert, ep.users = nil, nil
		if ep.TLS.on() {
			cert, err := LoadCertificate(ep.CertFile, ep.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("listener %s: %w", ep.Address, err)
			}
			ep.cert = cert
		}
		if ep.Auth.on() {
			users, err := LoadUsers(ep.UsersFile)
			if err != nil {
				return nil, fmt.Errorf("listener %s: %w", ep.Address, err)
			}
			ep.users = users
		}
		if prev, ok := cur[ep.Address]; ok && prev.TLS != ep.TLS {
			s.log.Warn("the tls mode of a listener changes only at restart", "listener", ep.Address,
				"serving", string(prev.TLS), "configured", string(ep.TLS))
		}
		out[i] = ep
	}
	return out, nil
}

// authOffered reports whether AUTH is offered to this session's client
// (once it uses TLS: go-smtp offers AUTH only over TLS).
func (s *session) authOffered() bool {
	return !s.peer.unix && s.ep.Auth.on() && s.ep.users != nil
}

// mayRelay decides whether the client may submit mail: unix socket
// clients always, TCP clients from allow_networks unless auth is required,
// and authenticated clients.
func (s *session) mayRelay() *smtp.SMTPError {
	switch {
	case s.peer.unix || s.user != "":
		return nil
	case s.ep.Auth != AuthRequired && s.peer.allowed(s.ep.Networks):
		return nil
	case s.authOffered():
		if _, isTLS := s.tlsState(); isTLS || s.starttlsOffered() {
			return errAuthRequired
		}
	}
	return errRelayDenied
}

// AuthMechanisms implements smtp.AuthSession.
func (s *session) AuthMechanisms() []string {
	if !s.authOffered() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth implements smtp.AuthSession. go-smtp refuses AUTH without TLS
// before calling it (Server.AllowInsecureAuth is false).
func (s *session) Auth(mech string) (sasl.Server, error) {
	if _, isTLS := s.tlsState(); !isTLS || !s.authOffered() {
		return nil, smtp.ErrAuthUnsupported
	}
	if s.env != nil {
		return nil, errAuthInTransaction
	}
	if s.authFailures >= maxAuthFailures {
		return nil, errAuthTooMany
	}
	switch mech {
	case sasl.Plain:
		return saslReplies{sasl.NewPlainServer(func(identity, user, password string) error {
			return s.authenticate(mech, identity, user, password)
		})}, nil
	case sasl.Login:
		return &loginServer{auth: func(user, password string) error {
			return s.authenticate(mech, "", user, password)
		}}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// authenticate checks a user's password. A PLAIN authorization identity
// other than the user itself is refused: nobody may submit as someone else.
func (s *session) authenticate(mech, identity, user, password string) error {
	ok := s.ep.users.Verify(user, password)
	if !ok || (identity != "" && identity != user) {
		s.authFailures++
		s.server.log.Warn("authentication failed", "user", logName(user), "client", s.peer.addr, "mechanism", mech)
		return errAuthFailed
	}
	s.user = user
	s.server.log.Info("authenticated", "user", user, "client", s.peer.addr, "mechanism", mech)
	return nil
}

// userAttr is the log attribute for an authenticated user; none if "".
func userAttr(user string) slog.Attr {
	if user == "" {
		return slog.Attr{}
	}
	return slog.String("user", user)
}

// logName shortens a client-chosen name for the log.
func logName(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}

// saslReplies turns the errors of a go-sasl server that are not SMTP
// replies (a malformed response) into 501 instead of go-smtp's 454.
type saslReplies struct{ sasl.Server }

func (r saslReplies) Next(response []byte) ([]byte, bool, error) {
	challenge, done, err := r.Server.Next(response)
	if err != nil {
		if _, ok := err.(*smtp.SMTPError); !ok {
			err = errAuthSyntax
		}
	}
	return challenge, done, err
}

// loginServer is the server side of the LOGIN mechanism
// (draft-murchison-sasl-login): "Username:", "Password:". go-sasl has only
// the client side. A client may send the user name as initial response.
type loginServer struct {
	auth func(user, password string) error
	user []byte
	step int
}

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		if response == nil { // no initial response
			l.step = 1
			return []byte("Username:"), false, nil
		}
		l.user, l.step = bytes.Clone(response), 2
		return []byte("Password:"), false, nil
	case 1:
		l.user, l.step = bytes.Clone(response), 2
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		return nil, true, l.auth(string(l.user), string(response))
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}
