// Package listener is Outbox's SMTP service: the localhost:25 listener for
// applications and LAN hosts, and the unix socket through which the
// sendmail command hands mail to the daemon. Each accepted message is
// written to the spool and made durable before the client hears 250.
//
// Line endings: go-smtp ends DATA only on CRLF.CRLF, and Outbox stores every
// message with canonical CRLF line endings, so nothing a client sends can
// end a message early when it is relayed, and no ambiguous line ending ever
// reaches the upstream. Local clients (unix sockets, loopback) may send bare
// CR and bare LF, which become CRLF; from any other client a message with a
// bare CR, a bare LF or a NUL byte is refused with 554 5.6.0 (lineends.go).
//
// Limits: each endpoint bounds its concurrent sessions, overall and per
// client address, the error replies per session and the time a client may
// take per command (limits.go).
//
// Malformed addresses: what go-smtp cannot parse as a path (a bare name, a
// missing <>) it refuses itself with 501 5.5.2; what it passes on and our
// checks refuse (internal/address) gets 501 5.1.3.
package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/outboxmta/outbox/internal/address"
	"github.com/outboxmta/outbox/spool"
)

// Endpoint is one address to serve and the policy that goes with it.
type Endpoint struct {
	// Address is "host:port" or an absolute unix socket path.
	Address string
	// Networks may submit without authentication. Unix socket clients are
	// always trusted: the file mode of the socket decides who can connect.
	Networks []netip.Prefix
	// Optional: a host without this address (no IPv6 loopback) skips the
	// endpoint instead of failing to start; see Unavailable.
	Optional bool
	// Sendmail marks the submission socket of the sendmail command.
	Sendmail bool

	// MaxSessions bounds the concurrent sessions on this endpoint and
	// MaxSessionsPerClient those from one IP address (not applied to unix
	// sockets); MaxErrors is how many error replies a session gets before
	// it is closed with 421 4.7.0. Zero means no limit. See limits.go.
	MaxSessions, MaxSessionsPerClient, MaxErrors int
	// Timeout is the read and write timeout, per command (and for a whole
	// message after DATA); zero means DefaultTimeout. It is applied when
	// the endpoint starts serving.
	Timeout time.Duration
	// LocalNetworks are the TCP clients, besides unix socket clients,
	// whose bare CR and LF are converted rather than refused; nil means
	// the loopback (127.0.0.0/8, ::1). See lineends.go.
	LocalNetworks []netip.Prefix

	// TLS offers STARTTLS or implicit TLS with the certificate in
	// CertFile and KeyFile (PEM), read at Serve and by Reconfigure.
	TLS               TLSMode
	CertFile, KeyFile string
	// Auth offers AUTH PLAIN and LOGIN, over TLS only, to the users in
	// UsersFile (see LoadUsers), read at Serve and by Reconfigure.
	Auth      AuthMode
	UsersFile string

	cert  *tls.Certificate // read from CertFile and KeyFile
	users *Users           // read from UsersFile
}

// Options are the limits and names shared by all endpoints.
type Options struct {
	Hostname       string // greeting and Received: header
	MaxMessageSize int64
	MaxRecipients  int
	Aliases        address.Aliases // rewrites local recipients
}

// maxLineLength bounds one line of a command or message.
const maxLineLength = 1 << 20

// Server accepts mail on its endpoints and puts it in the spool.
type Server struct {
	spool    *spool.Spool
	log      *slog.Logger
	onQueued func(*spool.Envelope)

	// The current configuration, swapped whole by Reconfigure; each session
	// works with the one in force when it began.
	opts       atomic.Pointer[Options]
	endpoints  atomic.Pointer[map[string]Endpoint] // by Address
	reconfigMu sync.Mutex                          // serializes Reconfigure
}

// New returns a server that spools into s and calls onQueued after each
// message is durably queued.
func New(s *spool.Spool, opts Options, onQueued func(*spool.Envelope), log *slog.Logger) *Server {
	srv := &Server{spool: s, log: log, onQueued: onQueued}
	srv.Reconfigure(opts, nil)
	return srv
}

// Reconfigure replaces the options and the policies of the endpoints
// (matched by Address) for sessions that start from now on. Endpoints not
// listed keep the policy they were served with. It reads the endpoints'
// certificates and users files again, and changes nothing if any cannot be
// read. A changed tls mode takes effect only at restart.
func (s *Server) Reconfigure(opts Options, eps []Endpoint) error {
	eps, err := s.loadFiles(eps)
	if err != nil {
		return err
	}
	// Serve and a SIGHUP reload may reconfigure at once: one at a time, so
	// neither loses the other's endpoints.
	s.reconfigMu.Lock()
	defer s.reconfigMu.Unlock()
	s.opts.Store(&opts)
	m := map[string]Endpoint{}
	if old := s.endpoints.Load(); old != nil {
		maps.Copy(m, *old)
	}
	for _, ep := range eps {
		m[ep.Address] = ep
	}
	s.endpoints.Store(&m)
	return nil
}

// endpoint returns the current policy for the endpoint at addr.
func (s *Server) endpoint(addr string) Endpoint { return (*s.endpoints.Load())[addr] }

// Unavailable reports whether err from Listen means the host lacks the
// address (no IPv6 loopback, say) rather than that it is busy or forbidden.
func Unavailable(err error) bool {
	return errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT)
}

// Listen opens the endpoint's socket. A unix socket left by an earlier run
// is replaced; the sendmail socket is made writable by every local user.
func Listen(ep Endpoint) (net.Listener, error) {
	if !filepath.IsAbs(ep.Address) {
		l, err := net.Listen("tcp", ep.Address)
		if err != nil {
			return nil, fmt.Errorf("listener: %w", err)
		}
		return l, nil
	}
	if err := os.MkdirAll(filepath.Dir(ep.Address), 0o755); err != nil {
		return nil, fmt.Errorf("listener: %w", err)
	}
	if fi, err := os.Lstat(ep.Address); err == nil && fi.Mode().Type() == fs.ModeSocket {
		// Replace a socket left by a crash, but never one a running
		// daemon still answers on.
		if c, err := net.DialTimeout("unix", ep.Address, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("listener: %s: another process is serving this socket", ep.Address)
		}
		os.Remove(ep.Address)
	}
	l, err := net.Listen("unix", ep.Address)
	if err != nil {
		return nil, fmt.Errorf("listener: %w", err)
	}
	mode := os.FileMode(0o660)
	if ep.Sendmail {
		mode = 0o666
	}
	if err := os.Chmod(ep.Address, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("listener: %w", err)
	}
	return l, nil
}

// Serve serves SMTP on l for endpoint ep until ctx is done. Then it stops
// accepting, lets sessions in progress finish their transaction, ends idle
// ones with 421, and returns when all are closed or after 10 seconds (see
// drain.go). It fails at once if the endpoint's certificate or users file
// cannot be read.
func (s *Server) Serve(ctx context.Context, l net.Listener, ep Endpoint) error {
	if err := s.Reconfigure(*s.opts.Load(), []Endpoint{ep}); err != nil {
		l.Close()
		return err
	}
	ep = s.endpoint(ep.Address)
	opts := s.opts.Load()
	srv := smtp.NewServer(&backend{server: s, addr: ep.Address})
	srv.Domain = opts.Hostname
	srv.MaxMessageBytes = opts.MaxMessageSize
	srv.MaxRecipients = opts.MaxRecipients
	// go-smtp applies one line limit to commands and message lines alike.
	// Applications (PHP's HTML mail above all) send message lines far over
	// RFC 5321's 998 octets, and Postfix accepts them, so the limit only
	// bounds the memory a single line may take.
	srv.MaxLineLength = maxLineLength
	timeout := ep.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	srv.ReadTimeout = timeout
	srv.WriteTimeout = timeout
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	srv.ErrorLog = errorLog{s.log.With("listener", ep.Address)}
	sessions := newDrain()
	l = sessions.listener(l) // innermost: it must see the socket's own I/O
	l = newLimitListener(l, func() Endpoint { return s.endpoint(ep.Address) },
		func() string { return s.opts.Load().Hostname }, s.log.With("listener", ep.Address))
	l = s.setupTLS(srv, l, ep)

	stop := context.AfterFunc(ctx, func() {
		sessions.stop()
		// Closing the socket ends srv.Serve below. Shutdown closes only
		// the listeners srv.Serve has registered, which it may not have
		// yet when ctx was done before this Serve began (a SIGTERM right
		// after start), so the socket is closed here too. The sessions
		// are drain's to end.
		l.Close()
		sctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		srv.Shutdown(sctx)
	})
	defer stop()
	s.log.Info("listening", "address", ep.Address)
	err := srv.Serve(l)
	if errors.Is(err, smtp.ErrServerClosed) || ctx.Err() != nil {
		sessions.wait()
		return nil
	}
	return fmt.Errorf("listener %s: %w", ep.Address, err)
}

// errorLog sends go-smtp's connection errors to slog.
type errorLog struct{ log *slog.Logger }

func (e errorLog) Printf(format string, v ...any) { e.log.Warn(fmt.Sprintf(format, v...)) }
func (e errorLog) Println(v ...any)               { e.log.Warn(fmt.Sprint(v...)) }
