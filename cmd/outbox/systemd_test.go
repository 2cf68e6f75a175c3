package main

// systemd integration: socket activation through systemd-socket-activate,
// sd_notify readiness, status and stopping, the watchdog, and reloading on
// SIGHUP, all with the real binary.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/outboxmta/outbox/internal/testutil"
	"github.com/outboxmta/outbox/listener"
)

// daemonProc is a child process whose output can be read while it runs.
type daemonProc struct {
	cmd    *exec.Cmd
	out    *testutil.SyncBuffer
	exited chan struct{}
	err    error // from Wait, once exited is closed
}

// startDaemon starts path with args and the test's environment, less any
// systemd variables of its own, plus env.
func startDaemon(t *testing.T, path string, env []string, args ...string) *daemonProc {
	t.Helper()
	p := &daemonProc{cmd: dieWithTest(exec.Command(path, args...)), out: &testutil.SyncBuffer{}, exited: make(chan struct{})}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case name == "NOTIFY_SOCKET", strings.HasPrefix(name, "LISTEN_"), strings.HasPrefix(name, "WATCHDOG_"):
			continue
		}
		p.cmd.Env = append(p.cmd.Env, kv)
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(path), p.out)
		}
	})
	return p
}

// wait waits for the process to exit and returns Wait's error.
func (p *daemonProc) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(30 * time.Second):
		t.Fatal("timed out waiting for the process to exit")
	}
	return nil
}

// logged waits until the output has a line containing every one of parts.
func (p *daemonProc) logged(t *testing.T, parts ...string) string {
	t.Helper()
	var found string
	waitFor(t, fmt.Sprintf("a log line with %q", parts), func() bool {
		for line := range strings.SplitSeq(p.out.String(), "\n") {
			ok := true
			for _, s := range parts {
				ok = ok && strings.Contains(line, s)
			}
			if ok {
				found = line
				return true
			}
		}
		return false
	})
	return found
}

// notifySocket is a stand-in for systemd's notification socket: it keeps
// every datagram the daemon sends.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify.sock")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, _, err := c.ReadFromUnix(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	return n
}

// env returns the variable that points a daemon at n.
func (n *notifySocket) env() string { return "NOTIFY_SOCKET=" + n.path }

// count returns how many datagrams had a line equal to line.
func (n *notifySocket) count(line string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.msgs {
		for l := range strings.SplitSeq(m, "\n") {
			if l == line {
				c++
			}
		}
	}
	return c
}

// messages returns the datagrams so far.
func (n *notifySocket) messages() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// await waits until at least k datagrams had the line.
func (n *notifySocket) await(t *testing.T, line string, k int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d× %q on the notify socket (have %q)", k, line, n.messages()), func() bool { return n.count(line) >= k })
}

// socketActivate returns the path of systemd-socket-activate (Debian:
// package systemd).
func socketActivate(t *testing.T) string {
	t.Helper()
	return testutil.NeedTool(t, "systemd-socket-activate")
}

// Started by systemd-socket-activate with both sockets passed, the daemon
// serves them instead of opening its own, tells the notify socket READY=1,
// delivers what arrives on them, and tells STOPPING=1 once on SIGTERM.
func TestSocketActivation(t *testing.T) {
	sa := socketActivate(t)
	w := newWorld(t)
	w.startSink(t)
	sock := filepath.Join(w.dir, "run", "submit.sock")
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	n := listenNotify(t)
	// The TCP socket has a name that is no endpoint's, so it is matched by
	// the address it is bound to; the unix socket by its name "submit".
	p := startDaemon(t, sa, nil, "-l", w.listen, "-l", sock, "--fdname=smtp:submit", "-E", n.env(),
		"--", filepath.Join(bin, "outbox"), "serve", "--config", w.config)
	// systemd-socket-activate starts outbox (with exec: same pid) at the
	// first connection.
	waitFor(t, "systemd-socket-activate to listen", func() bool { return listening(w.listen) })
	n.await(t, "READY=1", 1)
	if n.count("STOPPING=1") != 0 {
		t.Errorf("STOPPING=1 before any signal: %q", n.messages())
	}
	p.logged(t, "using socket passed by systemd", "address="+w.listen, `socket="\"smtp\" (fd 3, tcp `+w.listen+`)"`)
	p.logged(t, "using socket passed by systemd", "address="+sock, `"\"submit\" (fd 4, unix `+sock+`)"`)

	if reply := w.smtpSend(t, "app@example.com", []string{"bob@example.net"}, "Subject: activated\r\nX-Marker: activated-smtp\r\n\r\nx\r\n"); !strings.Contains(reply, "queued as") {
		t.Errorf("reply %q", reply)
	}
	if out, err := w.sendmail(t, "Subject: activated\nX-Marker: activated-sendmail\n\nx\n", "carol@example.net"); err != nil {
		t.Fatalf("sendmail: %v\n%s", err, out)
	}
	// Through the passed unix socket, not a drop into incoming/.
	p.logged(t, "msg=queued", "client="+sock, "origin=sendmail")
	waitFor(t, "both messages at the sink", func() bool {
		return w.count(t, "X-Marker: activated-smtp") == 1 && w.count(t, "X-Marker: activated-sendmail") == 1
	})

	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(t); err != nil {
		t.Errorf("outbox serve exited with %v after SIGTERM, want status 0", err)
	}
	n.await(t, "STOPPING=1", 1)
	time.Sleep(100 * time.Millisecond) // let the reader drain the socket
	if c := n.count("STOPPING=1"); c != 1 {
		t.Errorf("STOPPING=1 sent %d times: %q", c, n.messages())
	}
	if c := n.count("READY=1"); c != 1 {
		t.Errorf("READY=1 sent %d times: %q", c, n.messages())
	}
}

// A passed socket that matches no configured endpoint stops the start.
func TestSocketActivationRefusesUnknownSocket(t *testing.T) {
	sa := socketActivate(t)
	w := newWorld(t)
	other := freeAddr(t)
	p := startDaemon(t, sa, nil, "-l", other, "--", filepath.Join(bin, "outbox"), "serve", "--config", w.config)
	waitFor(t, "systemd-socket-activate to listen", func() bool { return listening(other) })
	err := p.wait(t)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 78 {
		t.Errorf("exit: %v, want status 78", err)
	}
	out := p.out.String()
	for _, want := range []string{other, "matches no configured endpoint", w.listen} {
		if !strings.Contains(out, want) {
			t.Errorf("error does not say %q:\n%s", want, out)
		}
	}
	if listening(w.listen) {
		t.Errorf("the configured listener %s is open", w.listen)
	}
}

// With WATCHDOG_USEC set, the daemon pings every half interval.
func TestWatchdogPings(t *testing.T) {
	w := newWorld(t)
	n := listenNotify(t)
	// No WATCHDOG_PID: go-systemd accepts its absence (systemd sets it,
	// but the test knows the pid only after the start).
	p := startDaemon(t, filepath.Join(bin, "outbox"), []string{n.env(), "WATCHDOG_USEC=200000"}, "serve", "--config", w.config)
	n.await(t, "READY=1", 1)
	if n.count("STATUS=queue: 0 messages") == 0 {
		t.Errorf("no queue status with READY=1: %q", n.messages())
	}
	start := time.Now()
	n.await(t, "WATCHDOG=1", 6)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("6 pings took %s at a 200ms watchdog interval", d)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(t); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}

// The watchdog loop pings only while the runner is alive.
func TestWatchdogWithholdsPingsWhenStuck(t *testing.T) {
	var alive atomic.Bool
	alive.Store(true)
	var pings atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logged testutil.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	const interval = 40 * time.Millisecond
	go watchdog(ctx, interval, func(d time.Duration) bool {
		if d != interval {
			t.Errorf("alive asked about %s, want the interval %s", d, interval)
		}
		return alive.Load()
	}, func() { pings.Add(1) }, log)

	waitFor(t, "pings", func() bool { return pings.Load() >= 3 })
	alive.Store(false)
	time.Sleep(interval) // a check already past alive may still ping
	stuck := pings.Load()
	time.Sleep(5 * interval)
	if p := pings.Load(); p != stuck {
		t.Errorf("%d pings while the runner was stuck", p-stuck)
	}
	if !strings.Contains(logged.String(), "queue runner not responding") {
		t.Errorf("nothing logged about the stuck runner: %s", logged.String())
	}
	alive.Store(true)
	waitFor(t, "pings again", func() bool { return pings.Load() >= stuck+2 })
}

// SIGHUP applies a changed configuration (aliases here) to new sessions,
// warns about what needs a restart, and survives an invalid file.
func TestReloadOnSIGHUP(t *testing.T) {
	w := newWorld(t)
	w.startSink(t)
	n := listenNotify(t)
	p := startDaemon(t, filepath.Join(bin, "outbox"), []string{n.env()}, "serve", "--config", w.config)
	waitFor(t, "outbox serve to listen", func() bool { return listening(w.listen) })
	n.await(t, "READY=1", 1)

	send := func(marker string) string {
		t.Helper()
		if reply := w.smtpSend(t, "app@example.com", []string{"root@example.com"},
			"Subject: reload\r\nX-Marker: "+marker+"\r\n\r\nx\r\n"); !strings.Contains(reply, "queued as") {
			t.Fatalf("reply %q", reply)
		}
		waitFor(t, marker+" at the sink", func() bool { return w.count(t, "X-Marker: "+marker+"\r\n") == 1 })
		for _, m := range w.delivered(t) {
			if strings.Contains(m, "X-Marker: "+marker+"\r\n") {
				return m
			}
		}
		return ""
	}
	if m := send("before"); !strings.Contains(m, "X-Sink-Rcpt-To: <admin@example.net>") {
		t.Fatalf("before the reload, root@ went elsewhere:\n%s", m)
	}

	orig, err := os.ReadFile(w.config)
	if err != nil {
		t.Fatal(err)
	}
	otherSpool := filepath.Join(w.dir, "other-spool")
	otherListen := freeAddr(t)
	cfg := string(orig)
	for _, r := range [][2]string{
		{`root = "admin@example.net"`, `root = "ops@example.net"`},
		{fmt.Sprintf("dir = %q", filepath.Join(w.dir, "spool")), fmt.Sprintf("dir = %q", otherSpool)},
		{fmt.Sprintf("address = %q", w.listen), fmt.Sprintf("address = %q", otherListen)},
		{`retry_min = "1s"`, `retry_min = "3s"`},
		{`retry_max = "2s"`, `retry_max = "5s"`},
	} {
		if !strings.Contains(cfg, r[0]) {
			t.Fatalf("config lacks %q", r[0])
		}
		cfg = strings.Replace(cfg, r[0], r[1], 1)
	}
	if err := os.WriteFile(w.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.logged(t, "configuration reloaded", "file="+w.config)
	p.logged(t, "needs a restart", "key=spool.dir", "new="+otherSpool)
	p.logged(t, "needs a restart", "key=listener[0].address", "running="+w.listen)
	p.logged(t, "needs a restart", "key=listener[0].address", "new="+otherListen)
	n.await(t, "RELOADING=1", 1)
	n.await(t, "READY=1", 2)
	if listening(otherListen) {
		t.Errorf("the new listener address %s is served without a restart", otherListen)
	}

	// The new alias applies; the old listener and spool stay in use.
	if m := send("after"); !strings.Contains(m, "X-Sink-Rcpt-To: <ops@example.net>") {
		t.Errorf("after the reload, root@ is not rewritten to the new alias:\n%s", m)
	}
	if _, err := os.Stat(otherSpool); err == nil {
		t.Errorf("the new spool.dir %s was created without a restart", otherSpool)
	}

	// An invalid file changes nothing.
	bad := strings.Replace(cfg, `retry_min = "3s"`, `retry_min = "soon"`, 1)
	if err := os.WriteFile(w.config, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.logged(t, "level=ERROR", "configuration error", "retry_min")
	p.logged(t, "configuration not reloaded", "file="+w.config)
	n.await(t, "READY=1", 3)
	if m := send("after-bad"); !strings.Contains(m, "X-Sink-Rcpt-To: <ops@example.net>") {
		t.Errorf("after a failed reload, the running aliases changed:\n%s", m)
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(t); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}

// matchSockets follows the naming rule of systemd.go.
func TestMatchSockets(t *testing.T) {
	dir := t.TempDir()
	listen := func(network, addr string) net.Listener {
		t.Helper()
		l, err := net.Listen(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	tcp := listen("tcp", "127.0.0.1:0")
	submit := filepath.Join(dir, "submit.sock")
	unixSubmit := listen("unix", submit)
	elsewhere := listen("unix", filepath.Join(dir, "elsewhere.sock"))
	lan := listen("unix", filepath.Join(dir, "lan.sock"))
	stray := listen("tcp", "127.0.0.1:0")

	eps := []listener.Endpoint{
		{Address: submit, Sendmail: true},
		{Address: tcp.Addr().String()},
		{Address: filepath.Join(dir, "lan.sock")},
		{Address: filepath.Join(dir, "named.sock")},
	}
	for _, tt := range []struct {
		name string
		l    net.Listener
		want string // endpoint address, or "" for an error
	}{
		{"LISTEN_FD_3", tcp, tcp.Addr().String()},
		{"outbox.socket", unixSubmit, submit},
		{"submit", elsewhere, submit},
		{"submit", tcp, tcp.Addr().String()}, // only a unix socket can be the sendmail socket
		{"submit", stray, ""},
		{filepath.Join(dir, "named.sock"), elsewhere, filepath.Join(dir, "named.sock")},
		{"outbox.socket", lan, filepath.Join(dir, "lan.sock")},
		{"outbox.socket", stray, ""},
		{"outbox.socket", elsewhere, ""},
	} {
		got, err := matchSockets(eps, []passedSocket{{name: tt.name, fd: 3, l: tt.l}})
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("%s %s: matched %s, want an error", tt.name, tt.l.Addr(), got[0].ep.Address)
		case tt.want == "" && !strings.Contains(err.Error(), tt.l.Addr().String()):
			t.Errorf("%s %s: error does not name the socket: %v", tt.name, tt.l.Addr(), err)
		case tt.want != "" && err != nil:
			t.Errorf("%s %s: %v", tt.name, tt.l.Addr(), err)
		case tt.want != "" && got[0].ep.Address != tt.want:
			t.Errorf("%s %s: matched %s, want %s", tt.name, tt.l.Addr(), got[0].ep.Address, tt.want)
		}
	}
}

func TestSameTCP(t *testing.T) {
	addr := func(s string) *net.TCPAddr {
		a, err := net.ResolveTCPAddr("tcp", s)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, tt := range []struct {
		configured, bound string
		want              bool
	}{
		{"127.0.0.1:25", "127.0.0.1:25", true},
		{"127.0.0.1:25", "127.0.0.1:26", false},
		{"127.0.0.2:25", "127.0.0.1:25", false},
		{"[::1]:25", "127.0.0.1:25", false},
		{"[::1]:25", "[::1]:25", true},
		{"[::ffff:127.0.0.1]:25", "127.0.0.1:25", true},
		{"127.0.0.1:25", "[::ffff:127.0.0.1]:25", true},
		{":25", "[::]:25", true},
		{":25", "0.0.0.0:25", true},
		{"0.0.0.0:25", "[::]:25", true},
		{"[::]:25", "0.0.0.0:25", true},
		{":25", "127.0.0.1:25", false},
		{"localhost:25", "127.0.0.1:25", true},
		{"127.0.0.1:smtp", "127.0.0.1:25", false},
	} {
		if got := sameTCP(tt.configured, addr(tt.bound)); got != tt.want {
			t.Errorf("sameTCP(%q, %s) = %v, want %v", tt.configured, tt.bound, got, tt.want)
		}
	}
}

// rawSMTP is a line-level SMTP client, to stop a session wherever the test
// needs.
type rawSMTP struct {
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawSMTP {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := &rawSMTP{c: c, r: bufio.NewReader(c)}
	s.reply(t, "220")
	return s
}

// reply reads a whole reply and checks its code.
func (s *rawSMTP) reply(t *testing.T, code string) string {
	t.Helper()
	s.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var all string
	for {
		line, err := s.r.ReadString('\n')
		all += line
		if err != nil {
			t.Fatalf("reading the reply (want %s): %q, %v", code, all, err)
		}
		if len(line) < 4 || line[3] != '-' {
			break
		}
	}
	if !strings.HasPrefix(all, code) {
		t.Fatalf("reply %q, want %s", all, code)
	}
	return all
}

func (s *rawSMTP) cmd(t *testing.T, line, code string) string {
	t.Helper()
	if _, err := s.c.Write([]byte(line + "\r\n")); err != nil {
		t.Fatal(err)
	}
	return s.reply(t, code)
}

// On SIGTERM a session in the middle of a message finishes it and gets
// 250; one waiting for its client gets 421; then the daemon exits 0
// without waiting out the 10 second grace.
func TestShutdownEndsSessions(t *testing.T) {
	w := newWorld(t) // no upstream: what is queued stays queued
	p := startDaemon(t, filepath.Join(bin, "outbox"), nil, "serve", "--config", w.config)
	waitFor(t, "outbox serve to listen", func() bool { return listening(w.listen) })

	idle := dialRaw(t, w.listen)
	idle.cmd(t, "EHLO idle.test", "250")
	busy := dialRaw(t, w.listen)
	busy.cmd(t, "EHLO busy.test", "250")
	busy.cmd(t, "MAIL FROM:<app@example.com>", "250")
	busy.cmd(t, "RCPT TO:<bob@example.net>", "250")
	busy.cmd(t, "DATA", "354")
	busy.c.Write([]byte("Subject: during shutdown\r\nX-Marker: shutdown\r\n\r\nfirst half\r\n"))

	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, "the listening socket to close", func() bool { return !listening(w.listen) })
	busy.c.Write([]byte("second half\r\n"))
	time.Sleep(200 * time.Millisecond)
	if reply := busy.cmd(t, ".", "250"); !strings.Contains(reply, "queued as") {
		t.Errorf("end of DATA during shutdown: %q", reply)
	}
	if reply := idle.reply(t, "421"); time.Since(start) > 5*time.Second {
		t.Errorf("the idle session got %q only after %s", reply, time.Since(start))
	}
	if reply := busy.reply(t, "421"); !strings.HasPrefix(reply, "421 4.") {
		t.Errorf("after its message, the session got %q", reply)
	}
	if err := p.wait(t); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("shutdown took %s with every session ended", d)
	}
	if q := w.queue(t); len(q) != 1 {
		t.Errorf("queue after shutdown: %+v, want the message sent during it", q)
	}
}
