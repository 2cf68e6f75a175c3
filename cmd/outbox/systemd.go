package main

// The daemon's side of systemd: socket activation, readiness and status
// notifications, and the watchdog.
//
// Socket activation. When systemd starts `outbox serve` with sockets
// (LISTEN_FDS, from a .socket unit), every passed socket is matched to one
// configured endpoint, the sendmail socket ([sendmail] socket) or a
// [[listener]], and served with that endpoint's policy. A passed socket
// matches an endpoint when, checked in this order:
//
//  1. it is a unix socket and its name (FileDescriptorName= in the .socket
//     unit, LISTEN_FDNAMES) is "submit": the sendmail socket;
//  2. it is a unix socket and its name equals the endpoint's address, a
//     unix socket path. (A "host:port" cannot be a name: systemd
//     separates names with colons);
//  3. the address it is bound to is the endpoint's: the same unix socket
//     path (after cleaning), or the same TCP port and IP address, with
//     IPv4-mapped IPv6 addresses taken as IPv4, every wildcard address
//     (an empty host, 0.0.0.0, [::]) equal to every other, and a host name
//     in the configuration standing for each of its addresses.
//
// systemd names sockets after their .socket unit unless told otherwise,
// and FileDescriptorName= names every socket of its unit, so a name that
// does not match (a TCP socket named "submit" too) falls through to the
// address. A passed socket that
// matches no endpoint stops the start with an error naming it: serving it
// with a guessed policy could open a relay to networks the configuration
// never trusted. Endpoints without a passed socket are opened as usual.
// Passed sockets are used as they are: their file mode (SocketMode=,
// default 0666, which the sendmail socket needs) and owner are the unit's
// business, and they are not removed at exit.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/outboxmta/outbox/listener"
	"github.com/outboxmta/outbox/runner"
)

// submitName is the FileDescriptorName of the sendmail socket.
const submitName = "submit"

// socket is an open listening socket and the endpoint it serves.
type socket struct {
	ep listener.Endpoint
	l  net.Listener
	// passed describes the socket systemd passed, "" if outbox opened it.
	passed string
}

// passedSocket is one socket from systemd.
type passedSocket struct {
	name string // FileDescriptorName, or LISTEN_FD_<n> when there is none
	fd   int
	l    net.Listener
}

func (p passedSocket) String() string {
	return fmt.Sprintf("%q (fd %d, %s %s)", p.name, p.fd, p.l.Addr().Network(), p.l.Addr())
}

// openSockets returns a socket for every endpoint: those systemd passed
// (matched as the package comment says) and, for the other endpoints,
// sockets opened with listener.Listen. On error nothing is left open.
func openSockets(eps []listener.Endpoint, log *slog.Logger) (socks []socket, err error) {
	defer func() {
		if err != nil {
			for _, s := range socks {
				s.l.Close()
			}
			socks = nil
		}
	}()
	passed, err := passedSockets()
	if err != nil {
		return nil, err
	}
	socks, err = matchSockets(eps, passed)
	if err != nil {
		return socks, configError{err}
	}
	for _, s := range socks {
		log.Info("using socket passed by systemd", "address", s.ep.Address, "socket", s.passed)
		if s.ep.Sendmail && s.l.Addr().Network() == "unix" && !samePath(s.l.Addr().String(), s.ep.Address) {
			log.Warn("the socket systemd passed as the sendmail socket is not at the configured path, where the sendmail command connects",
				"socket", s.l.Addr().String(), "sendmail.socket", s.ep.Address)
		}
	}
	for _, ep := range eps {
		if slices.ContainsFunc(socks, func(s socket) bool { return s.ep.Address == ep.Address }) {
			continue
		}
		l, err := listener.Listen(ep)
		if err != nil && ep.Optional && listener.Unavailable(err) {
			log.Warn("skipping default listener: this host lacks its address", "address", ep.Address, "err", err)
			continue
		}
		if err != nil {
			return socks, err
		}
		socks = append(socks, socket{ep: ep, l: l})
	}
	return socks, nil
}

// passedSockets returns the sockets systemd passed, if it started us with
// socket activation, and takes the activation variables out of the
// environment. Every one must be a listening stream socket.
func passedSockets() (out []passedSocket, err error) {
	files := activation.Files(true)
	defer func() {
		for _, f := range files {
			f.Close() // net.FileListener made its own copy
		}
		if err != nil {
			for _, p := range out {
				p.l.Close()
			}
			out = nil
		}
	}()
	for _, f := range files {
		fd := int(f.Fd())
		what := fmt.Sprintf("%q (fd %d)", f.Name(), fd)
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v == 0 {
			return out, configError{fmt.Errorf("systemd passed %s, which is not a listening socket (outbox needs Accept=no)", what)}
		}
		l, err := net.FileListener(f)
		if err != nil {
			return out, configError{fmt.Errorf("systemd passed %s, which outbox cannot serve: %v", what, err)}
		}
		out = append(out, passedSocket{name: f.Name(), fd: fd, l: l})
	}
	return out, nil
}

// matchSockets pairs each passed socket with its endpoint, or fails naming
// the first one that matches none.
func matchSockets(eps []listener.Endpoint, passed []passedSocket) ([]socket, error) {
	var out []socket
	for _, p := range passed {
		ep, err := matchEndpoint(eps, p)
		if err != nil {
			return nil, err
		}
		out = append(out, socket{ep: ep, l: p.l, passed: p.String()})
	}
	return out, nil
}

func matchEndpoint(eps []listener.Endpoint, p passedSocket) (listener.Endpoint, error) {
	addr := p.l.Addr()
	isUnix := addr.Network() == "unix"
	if p.name == submitName && isUnix {
		for _, ep := range eps {
			if ep.Sendmail {
				return ep, nil
			}
		}
	}
	for _, ep := range eps {
		if filepath.IsAbs(ep.Address) && isUnix && samePath(p.name, ep.Address) {
			return ep, nil
		}
	}
	for _, ep := range eps {
		if filepath.IsAbs(ep.Address) {
			if isUnix && samePath(addr.String(), ep.Address) {
				return ep, nil
			}
		} else if ta, ok := addr.(*net.TCPAddr); ok && sameTCP(ep.Address, ta) {
			return ep, nil
		}
	}
	configured := make([]string, len(eps))
	for i, ep := range eps {
		configured[i] = ep.Address
	}
	return listener.Endpoint{}, fmt.Errorf("systemd passed socket %s, which matches no configured endpoint (%s): "+
		"refusing to serve it with a guessed policy; add its address as a [[listener]], "+
		"name the sendmail socket %q (FileDescriptorName=), or remove it from the .socket unit",
		p, strings.Join(configured, ", "), submitName)
}

func samePath(a, b string) bool {
	return filepath.IsAbs(a) && filepath.Clean(a) == filepath.Clean(b)
}

// sameTCP reports whether the configured "host:port" names the TCP address
// a (see the naming rule in the file comment).
func sameTCP(configured string, a *net.TCPAddr) bool {
	host, port, err := net.SplitHostPort(configured)
	if err != nil || port != strconv.Itoa(a.Port) {
		return false
	}
	got, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return false
	}
	got = got.Unmap().WithZone(a.Zone)
	if host == "" {
		return got.IsUnspecified()
	}
	want := []netip.Addr{}
	if ip, err := netip.ParseAddr(host); err == nil {
		want = append(want, ip)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return false
		}
		want = ips
	}
	for _, w := range want {
		w = w.Unmap()
		if w == got || w.IsUnspecified() && got.IsUnspecified() {
			return true
		}
	}
	return false
}

// notifier sends sd_notify(3) messages to systemd; with no NOTIFY_SOCKET
// it does nothing. The status line it keeps is repeated with READY=1 after
// a reload.
type notifier struct {
	log      *slog.Logger
	enabled  bool
	stopping sync.Once

	mu     sync.Mutex
	status string
}

func newNotifier(log *slog.Logger) *notifier {
	return &notifier{log: log, enabled: os.Getenv("NOTIFY_SOCKET") != ""}
}

// send sends one notification: lines of KEY=VALUE.
func (n *notifier) send(lines ...string) {
	if !n.enabled {
		return
	}
	if _, err := daemon.SdNotify(false, strings.Join(lines, "\n")); err != nil {
		n.log.Warn("cannot notify systemd", "err", err)
	}
}

// setStatus sends STATUS= if the text changed.
func (n *notifier) setStatus(s string) {
	n.mu.Lock()
	changed := s != n.status
	n.status = s
	n.mu.Unlock()
	if changed {
		n.send("STATUS=" + s)
	}
}

// ready says the daemon serves (again, after a reload), with its status.
func (n *notifier) ready(status string) {
	n.mu.Lock()
	n.status = status
	n.mu.Unlock()
	n.send(daemon.SdNotifyReady, "STATUS="+status)
}

// reloading says a reload began; ready says when it is over. systemd's
// Type=notify-reload wants the monotonic time with it.
func (n *notifier) reloading() {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		n.send(daemon.SdNotifyReloading, "STATUS=reloading the configuration")
		return
	}
	n.send(daemon.SdNotifyReloading, fmt.Sprintf("MONOTONIC_USEC=%d", ts.Nano()/1000), "STATUS=reloading the configuration")
}

// stop says shutdown began; only the first call sends.
func (n *notifier) stop() {
	n.stopping.Do(func() {
		n.mu.Lock()
		n.status = "stopping: finishing sessions and deliveries in progress"
		n.mu.Unlock()
		n.send(daemon.SdNotifyStopping, "STATUS=stopping: finishing sessions and deliveries in progress")
	})
}

// queueStatus is the STATUS= line for the runner's queue.
func queueStatus(r *runner.Runner) string {
	n, delivering := r.Queued()
	s := fmt.Sprintf("queue: %d message%s", n, plural(n))
	if delivering > 0 {
		s += fmt.Sprintf(", %d being delivered", delivering)
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// statusInterval is how often the STATUS= line is brought up to date.
const statusInterval = 5 * time.Second

// reportStatus keeps the STATUS= line up to date until ctx is done.
func (n *notifier) reportStatus(ctx context.Context, r *runner.Runner) {
	if !n.enabled {
		return
	}
	every(ctx, statusInterval, func(context.Context) { n.setStatus(queueStatus(r)) })
}

// watchdogInterval returns systemd's watchdog interval (WatchdogSec=), or
// 0 when the watchdog is off for this process.
func watchdogInterval(log *slog.Logger) time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("ignoring the systemd watchdog setting", "err", err)
		return 0
	}
	return d
}

// watchdog sends WATCHDOG=1 every interval/2 until ctx is done, as long
// as alive(interval) holds. A stuck queue runner gets no pings, so systemd
// restarts the daemon (with Restart=on-failure or on-watchdog).
func watchdog(ctx context.Context, interval time.Duration, alive func(time.Duration) bool, ping func(), log *slog.Logger) {
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	stuck := false
	for {
		if !alive(interval) {
			if !stuck {
				log.Error("queue runner not responding: no longer answering the systemd watchdog", "within", interval)
				stuck = true
			}
		} else {
			if stuck {
				log.Warn("queue runner responding again: answering the systemd watchdog")
				stuck = false
			}
			ping()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
