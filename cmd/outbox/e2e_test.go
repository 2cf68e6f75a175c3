package main

// End-to-end tests: the real outbox binary, invoked as itself and as
// sendmail, delivering to a real SMTP server process (internal/smtpsink).

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/outboxmta/outbox/internal/testutil"
)

// bin holds the binaries TestMain builds: outbox, sendmail (a symlink to
// outbox) and smtpsink.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "outbox-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		for pkg, name := range map[string]string{".": "outbox", "../../internal/smtpsink": "smtpsink"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintf(os.Stderr, "building %s: %v\n", name, err)
				return 1
			}
		}
		for _, alias := range []string{"sendmail", "mailq"} {
			if err := os.Symlink("outbox", filepath.Join(dir, alias)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		bin = dir
		return m.Run()
	}()
	os.Exit(code)
}

// freeAddr returns a loopback address with a port nobody listens on, for
// a process the test starts later to bind.
//
// The port is taken from below the kernel's ephemeral range: a port from
// ":0" is ephemeral, and any outgoing connection on the machine (another
// test package runs alongside) may be given it before our process binds
// it ("address already in use"). Below the range only another listener
// can take it.
func freeAddr(t *testing.T) string {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	if span := min(low-1024, 10000); span > 0 {
		for range 100 {
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(low-1-rand.IntN(span)))
			if l, err := net.Listen("tcp", addr); err == nil {
				l.Close()
				return addr
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitFor polls cond until it holds, failing the test after a generous
// limit: it bounds a hang, it does not measure speed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// process is a child process whose output is kept for failure reports
// and may be read while it runs.
type process struct {
	cmd *exec.Cmd
	out *testutil.SyncBuffer
}

// dieWithTest has the kernel SIGKILL cmd's process when the test process
// dies: a go test killed by its -timeout, by a signal or by hand runs no
// t.Cleanup, and its daemons and sinks would run on as orphans. Linux
// sends the signal when the OS thread that started the child exits, not
// the process; the Go runtime keeps its threads until the process exits
// (it ends one only when a goroutine that locked it exits still locked,
// which tests do not do), so the spawning goroutine need not
// runtime.LockOSThread for a child that lives as long as its test.
func dieWithTest(cmd *exec.Cmd) *exec.Cmd {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	return cmd
}

// stopLimitTest bounds the wait for a signalled child: longer than the
// daemon's own bound (stopLimit), so a daemon that misses its signal
// fails the test instead of hanging it until go test's -timeout.
const stopLimitTest = stopLimit + 30*time.Second

func start(t *testing.T, name string, args ...string) *process {
	t.Helper()
	return startWith(t, name, nil, nil, filepath.Join(bin, name), args...)
}

// startWith starts the program path as start does, with files for it (fd 3
// on) and variables added to its environment; name is what failure reports
// call it.
func startWith(t *testing.T, name string, files []*os.File, env []string, path string, args ...string) *process {
	t.Helper()
	p := &process{cmd: dieWithTest(exec.Command(path, args...)), out: &testutil.SyncBuffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.ExtraFiles = files
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out)
		}
	})
	return p
}

// stop ends the process with sig and waits for it; one still running
// stopLimitTest later is killed and fails the test.
func (p *process) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	p.cmd.Process.Signal(sig)
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		return err
	case <-time.After(stopLimitTest):
		p.cmd.Process.Kill()
		<-exited
		t.Fatalf("%s still running %s after %v; killed", filepath.Base(p.cmd.Path), stopLimitTest, sig)
		return nil
	}
}

// listening reports whether something accepts connections at addr, a
// "host:port" or the path of a unix socket.
func listening(addr string) bool {
	network := "tcp"
	if strings.HasPrefix(addr, "/") {
		network = "unix"
	}
	c, err := net.Dial(network, addr)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// world is one test's temporary installation.
type world struct {
	dir      string // root of everything
	config   string
	listen   string // the listener's address
	sinkAddr string
	sinkDir  string
	sink     *process
	serve    *process
	// Set by holdPorts: the ports are then never free while the test runs.
	sinkPort, listenPort *heldPort
}

// holdPorts keeps the sink's and the listener's ports for the whole test
// (see ports_test.go): for tests that stop the sink or restart the daemon
// and count what arrives. The daemon then gets its listener by socket
// activation, as under systemd, and connections made while it is down wait
// for the next one.
func (w *world) holdPorts(t *testing.T) {
	t.Helper()
	w.sinkPort, w.listenPort = holdPort(t, w.sinkAddr), holdPort(t, w.listen)
	w.listenPort.lend(t) // refusing is for the upstream: the daemon's clients wait
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{dir: t.TempDir(), listen: freeAddr(t), sinkAddr: freeAddr(t)}
	w.sinkDir = filepath.Join(w.dir, "sink")
	w.config = filepath.Join(w.dir, "outbox.toml")
	if err := os.Mkdir(w.sinkDir, 0o755); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(w.sinkAddr)
	cfg := fmt.Sprintf(`hostname = "relay.test"
domain = "example.com"

[spool]
dir = %q
retry_min = "1s"
retry_max = "2s"

[sendmail]
socket = %q

[[listener]]
address = %q

[[upstream]]
host = %q
port = %s
tls = "none"

[aliases]
root = "admin@example.net"
`, filepath.Join(w.dir, "spool"), filepath.Join(w.dir, "run", "submit.sock"), w.listen, host, port)
	if err := os.WriteFile(w.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return w
}

// edit replaces the first old with new in the world's configuration,
// which must hold old.
func (w *world) edit(t *testing.T, old, new string) {
	t.Helper()
	b, err := os.ReadFile(w.config)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("config lacks %q", old)
	}
	if err := os.WriteFile(w.config, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (w *world) startSink(t *testing.T) {
	t.Helper()
	if w.sinkPort == nil {
		w.sink = start(t, "smtpsink", "-listen", w.sinkAddr, "-dir", w.sinkDir)
		waitFor(t, "the sink to listen", func() bool { return listening(w.sinkAddr) })
		return
	}
	// The held port accepts at once; the sink's first reply shows it is up.
	w.sink = startWith(t, "smtpsink", []*os.File{w.sinkPort.lend(t)}, nil, filepath.Join(bin, "smtpsink"), "-fd", "3", "-dir", w.sinkDir)
	waitFor(t, "the sink to greet", func() bool { return greets(w.sinkAddr) })
}

func (w *world) stopSink(t *testing.T) { w.stopSinkWith(t, syscall.SIGTERM) }

// stopSinkWith stops the sink with sig; a held port refuses connections
// again once it has exited.
func (w *world) stopSinkWith(t *testing.T, sig syscall.Signal) {
	t.Helper()
	w.sink.stop(t, sig)
	if w.sinkPort != nil {
		w.sinkPort.refuse(t)
	}
}

func (w *world) startServe(t *testing.T) {
	t.Helper()
	if w.listenPort == nil {
		w.serve = start(t, "outbox", "serve", "--config", w.config)
		waitFor(t, "outbox serve to listen", func() bool { return listening(w.listen) })
		return
	}
	// Socket activation: LISTEN_PID must be the daemon's pid, known only
	// once it runs, so a shell sets it and execs the daemon in its place.
	w.serve = startWith(t, "outbox", []*os.File{w.listenPort.lend(t)}, []string{"LISTEN_FDS=1"},
		"/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`,
		filepath.Join(bin, "outbox"), "serve", "--config", w.config)
	// The held port takes connections before the daemon runs; the sendmail
	// socket, which the daemon opens itself, says it has started.
	sock := filepath.Join(w.dir, "run", "submit.sock")
	waitFor(t, "outbox serve to listen", func() bool { return listening(sock) })
}

// greets reports whether an SMTP server at addr sends its greeting.
func greets(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	b := make([]byte, 3)
	_, err = io.ReadFull(c, b)
	return err == nil && string(b) == "220"
}

// sendmail runs the binary as sendmail with stdin and returns its output.
func (w *world) sendmail(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "sendmail"), args...)
	cmd.Env = append(os.Environ(), "OUTBOX_CONFIG="+w.config)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// smtpSend submits one message through the listener and returns the reply
// to the end of DATA, failing the test if it is not 2xx.
func (w *world) smtpSend(t *testing.T, from string, to []string, msg string) string {
	t.Helper()
	reply, err := w.smtpTry(t, from, to, msg)
	if err != nil {
		t.Fatalf("end of DATA: %v", err)
	}
	return reply
}

// smtpTry is smtpSend returning a refusal at the end of DATA as an error.
func (w *world) smtpTry(t *testing.T, from string, to []string, msg string) (string, error) {
	t.Helper()
	return w.smtpTryOpts(t, nil, from, to, msg)
}

// smtpTryOpts is smtpTry with MAIL FROM parameters.
func (w *world) smtpTryOpts(t *testing.T, opts *smtp.MailOptions, from string, to []string, msg string) (string, error) {
	t.Helper()
	c, err := smtp.Dial(w.listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(from, opts); err != nil {
		t.Fatal(err)
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	d, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	resp, err := d.CloseWithResponse()
	if err != nil {
		return "", err
	}
	c.Quit()
	return resp.StatusText, nil
}

// delivered returns the messages the sink stored.
func (w *world) delivered(t *testing.T) []string {
	t.Helper()
	return readFiles(t, filepath.Join(w.sinkDir, "*.eml"))
}

// readFiles returns the contents of the files matching pattern.
func readFiles(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// count returns how many delivered messages contain marker.
func (w *world) count(t *testing.T, marker string) int {
	n := 0
	for _, m := range w.delivered(t) {
		if strings.Contains(m, marker) {
			n++
		}
	}
	return n
}

// queue returns `outbox queue list --json`.
func (w *world) queue(t *testing.T) []queueEntry {
	t.Helper()
	out, err := exec.Command(filepath.Join(bin, "outbox"), "queue", "list", "--json", "--config", w.config).Output()
	if err != nil {
		t.Fatalf("outbox queue list: %v", err)
	}
	var q []queueEntry
	if err := json.Unmarshal(out, &q); err != nil {
		t.Fatalf("queue list output %q: %v", out, err)
	}
	return q
}

func TestEndToEnd(t *testing.T) {
	w := newWorld(t)
	w.startSink(t)
	w.startServe(t)

	// 1. The binary invoked as sendmail, recipients on the command line.
	out, err := w.sendmail(t, "Subject: via sendmail\nX-Marker: one\n\nhello from sendmail\n", "-i", "alice@example.net", "root")
	if err != nil {
		t.Fatalf("sendmail: %v\n%s", err, out)
	}
	// 2. An SMTP client through the listener.
	reply := w.smtpSend(t, "app@example.com", []string{"bob@example.net", "carol@example.net"},
		"Subject: via smtp\r\nX-Marker: two\r\n\r\nhello from smtp\r\n")
	if !strings.Contains(reply, "queued as") {
		t.Errorf("DATA reply %q does not name the queue ID", reply)
	}

	waitFor(t, "both messages at the upstream", func() bool { return w.count(t, "X-Marker:") == 2 })
	for _, m := range w.delivered(t) {
		switch {
		case strings.Contains(m, "X-Marker: one"):
			for _, want := range []string{"X-Sink-Rcpt-To: <alice@example.net>", "X-Sink-Rcpt-To: <admin@example.net>",
				"Received: by relay.test (Outbox, from userid",
				"From: ", "Date: ", "Message-ID: ", "\r\n\r\nhello from sendmail\r\n"} {
				if !strings.Contains(m, want) {
					t.Errorf("sendmail message lacks %q:\n%s", want, m)
				}
			}
		case strings.Contains(m, "X-Marker: two"):
			for _, want := range []string{"X-Sink-Mail-From: <app@example.com>", "X-Sink-Rcpt-To: <bob@example.net>",
				"X-Sink-Rcpt-To: <carol@example.net>", "Received: from client.test (127.0.0.1:", "\r\n\r\nhello from smtp\r\n"} {
				if !strings.Contains(m, want) {
					t.Errorf("smtp message lacks %q:\n%s", want, m)
				}
			}
		}
	}
	waitFor(t, "the queue to empty", func() bool { return len(w.queue(t)) == 0 })

	// 3. Upstream down: the message is deferred, then delivered by the
	// background retry once the upstream is back.
	w.stopSink(t)
	out, err = w.sendmail(t, "Subject: deferred\nX-Marker: three\n\nwhile the upstream was down\n", "dave@example.net")
	if err != nil {
		t.Fatalf("sendmail: %v\n%s", err, out)
	}
	waitFor(t, "a failed attempt", func() bool {
		q := w.queue(t)
		return len(q) == 1 && q[0].Attempts >= 1 && q[0].LastError != ""
	})
	w.startSink(t)
	waitFor(t, "the deferred message at the upstream", func() bool { return w.count(t, "X-Marker: three") == 1 })
	waitFor(t, "the queue to empty", func() bool { return len(w.queue(t)) == 0 })

	// SIGHUP does not end the daemon.
	w.serve.cmd.Process.Signal(syscall.SIGHUP)
	if reply := w.smtpSend(t, "app@example.com", []string{"erin@example.net"}, "Subject: after hup\r\nX-Marker: four\r\n\r\nx\r\n"); !strings.Contains(reply, "queued as") {
		t.Errorf("after SIGHUP: %q", reply)
	}
	waitFor(t, "the message sent after SIGHUP", func() bool { return w.count(t, "X-Marker: four") == 1 })

	if err := w.serve.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("outbox serve exited with %v after SIGTERM", err)
	}
	// Exactly once each.
	for _, marker := range []string{"X-Marker: one", "X-Marker: two", "X-Marker: three"} {
		if n := w.count(t, marker); n != 1 {
			t.Errorf("%s delivered %d times", marker, n)
		}
	}
}

// A message acknowledged with 250 survives kill -9 of the daemon and is
// delivered after a restart.
func TestKillAfterAck(t *testing.T) {
	w := newWorld(t)
	w.startServe(t) // the upstream is down: nothing leaves the queue yet
	const n = 5
	for i := range n {
		reply := w.smtpSend(t, "app@example.com", []string{"x@example.net"},
			fmt.Sprintf("Subject: kill test\r\nX-Marker: kill-%d\r\n\r\nbody\r\n", i))
		if !strings.Contains(reply, "queued") {
			t.Fatalf("reply %q", reply)
		}
	}
	w.serve.stop(t, syscall.SIGKILL)

	w.startSink(t)
	w.startServe(t)
	for i := range n {
		marker := fmt.Sprintf("X-Marker: kill-%d\r\n", i)
		waitFor(t, marker, func() bool { return w.count(t, marker) >= 1 })
	}
	waitFor(t, "the queue to empty", func() bool { return len(w.queue(t)) == 0 })
	for i := range n {
		if c := w.count(t, fmt.Sprintf("X-Marker: kill-%d\r\n", i)); c != 1 {
			t.Errorf("message %d delivered %d times", i, c)
		}
	}
}

// With the daemon down, sendmail drops the message into the spool and exits
// 0; mailq shows it; the daemon delivers it when it starts.
func TestSendmailWhileDaemonDown(t *testing.T) {
	w := newWorld(t)
	// The daemon creates the spool on its first start.
	w.startServe(t)
	w.serve.stop(t, syscall.SIGTERM)

	out, err := w.sendmail(t, "To: Admin <root>\nSubject: dropped\nX-Marker: dropped\n\nqueued with no daemon\n", "-t", "-i")
	if err != nil {
		t.Fatalf("sendmail with the daemon down: %v\n%s", err, out)
	}
	cmd := exec.Command(filepath.Join(bin, "mailq"))
	cmd.Env = append(os.Environ(), "OUTBOX_CONFIG="+w.config)
	mq, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(mq), "admin@example.net") || !strings.Contains(string(mq), "in 1 Request.") {
		t.Errorf("mailq (%v):\n%s", err, mq)
	}

	w.startSink(t)
	w.startServe(t)
	waitFor(t, "the dropped message at the upstream", func() bool { return w.count(t, "X-Marker: dropped") == 1 })
	m := w.delivered(t)[0]
	for _, want := range []string{"X-Sink-Rcpt-To: <admin@example.net>", "Received: by relay.test (Outbox, from userid", "To: Admin <root@example.com>\r\n"} {
		if !strings.Contains(m, want) {
			t.Errorf("dropped message lacks %q:\n%s", want, m)
		}
	}
}

// Neither the daemon nor a spool: exit 75 with a message saying what to fix.
func TestSendmailNowhereToQueue(t *testing.T) {
	w := newWorld(t) // the spool does not exist yet
	out, err := w.sendmail(t, "Subject: x\n\nbody\n", "bob@example.net")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 75 {
		t.Fatalf("sendmail exit: %v, want status 75\n%s", err, out)
	}
	if !strings.Contains(out, "outbox serve") {
		t.Errorf("message does not say what to fix: %s", out)
	}
}

func TestSendmailUsageErrors(t *testing.T) {
	w := newWorld(t)
	for _, tt := range []struct {
		args []string
		code int
	}{
		{nil, 64},                      // no recipients
		{[]string{"-f"}, 64},           // missing argument
		{[]string{"bad@@address"}, 67}, // malformed recipient
		{[]string{"-C", "/nonexistent.toml", "a@example.net"}, 78},
	} {
		out, err := w.sendmail(t, "Subject: x\n\nbody\n", tt.args...)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != tt.code {
			t.Errorf("sendmail %q: %v, want status %d\n%s", tt.args, err, tt.code, out)
		}
		if !strings.HasPrefix(out, "sendmail: ") {
			t.Errorf("sendmail %q: message %q does not start with the program name", tt.args, out)
		}
	}
}
