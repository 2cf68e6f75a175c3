package main

// The systemd units in systemd/: systemd-analyze accepts them without a
// warning, their hardening stays rated, and the daemon serves the socket
// set outbox.socket passes.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/outboxmta/outbox/internal/testutil"
)

// unitDir holds the units the packages install.
const unitDir = "../../systemd"

var units = []string{"outbox.service", "outbox.socket"}

// unitRoot returns a directory tree in which systemd-analyze --root finds
// the system's own units (sockets.target and the like), our units in
// etc/systemd/system, and an executable at every path the units run:
// /usr/sbin/outbox is the binary TestMain built. replace, if not nil,
// edits a unit's text before it is installed there.
func unitRoot(t *testing.T, replace func(name, text string) string) string {
	t.Helper()
	root := t.TempDir()
	systemUnits := "/usr/lib/systemd/system"
	if _, err := os.Stat(systemUnits); err != nil {
		systemUnits = "/lib/systemd/system"
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/lib/systemd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", systemUnits, filepath.Join(root, "usr/lib/systemd/system")).CombinedOutput(); err != nil {
		t.Fatalf("copying the system's units: %v\n%s", err, out)
	}
	etc := filepath.Join(root, "etc/systemd/system")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join(unitDir, u))
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		if replace != nil {
			text = replace(u, text)
		}
		if err := os.WriteFile(filepath.Join(etc, u), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, exe := range execPaths(t) {
		p := filepath.Join(root, exe)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if exe == "/usr/sbin/outbox" {
			// A copy: a symbolic link would resolve inside root.
			if out, err := exec.Command("cp", filepath.Join(bin, "outbox"), p).CombinedOutput(); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			continue
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// execPaths returns the programs outbox.service runs.
func execPaths(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, k := range []string{"ExecStart", "ExecReload", "ExecStartPre", "ExecStop"} {
		for _, v := range unitValues(t, "outbox.service", "Service", k) {
			out = append(out, strings.Fields(strings.TrimLeft(v, "-@:+!"))[0])
		}
	}
	return out
}

// unitValues returns every value of key in section of a unit in unitDir.
func unitValues(t *testing.T, unit, section, key string) []string {
	t.Helper()
	return testutil.UnitValues(t, filepath.Join(unitDir, unit), section, key)
}

// verifyUnits runs systemd-analyze verify on the units in root and returns
// what it printed about them (lines naming outbox) and its error.
func verifyUnits(t *testing.T, analyze, root string) (string, error) {
	t.Helper()
	cmd := exec.Command(analyze, append([]string{"verify", "--root=" + root}, units...)...)
	out, err := cmd.CombinedOutput()
	var ours []string
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.Contains(line, "outbox") {
			ours = append(ours, line)
		} else if strings.TrimSpace(line) != "" {
			t.Logf("systemd-analyze, about another unit: %s", line)
		}
	}
	return strings.Join(ours, "\n"), err
}

// systemd-analyze verify accepts the units without a word about them. It
// exits 0 on warnings (an unknown key, a bad value: ignored, as systemd
// itself would), so any line naming our units fails the test; a unit with
// a typo shows that such lines get through.
func TestSystemdUnitsVerify(t *testing.T) {
	analyze := needTool(t, "systemd-analyze")
	if out, err := verifyUnits(t, analyze, unitRoot(t, nil)); err != nil || out != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	broken := unitRoot(t, func(name, text string) string {
		return strings.Replace(text, "ProtectSystem=strict", "ProtectSystem=strickt", 1)
	})
	if out, _ := verifyUnits(t, analyze, broken); !strings.Contains(out, "strickt") {
		t.Errorf("systemd-analyze verify did not report a unit with ProtectSystem=strickt; output:\n%s", out)
	}
}

// The service's hardening rates "OK" or better in systemd-analyze
// security (exposure at most 2.0 of 10), so a lost setting shows.
func TestSystemdServiceExposure(t *testing.T) {
	analyze := needTool(t, "systemd-analyze")
	root := unitRoot(t, nil)
	out, err := exec.Command(analyze, "security", "--offline=yes", "--root="+root, "--threshold=20", "--no-pager", "outbox.service").CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: %v\n%s", err, out)
	}
	lastLine := strings.TrimSpace(string(out))
	lastLine = lastLine[strings.LastIndex(lastLine, "\n")+1:]
	t.Log(lastLine)
}

// activationSet is the socket set of outbox.socket, moved where a test may
// listen: TCP addresses keep their IP but get a free port, unix sockets move
// under dir. Addresses the host cannot bind (no IPv6) are left out.
type activationSet struct {
	tcp    []string // host:port, as in ListenStream=
	unix   []string
	fdname string // what systemd names each socket
}

func unitSocketSet(t *testing.T, dir string) activationSet {
	t.Helper()
	set := activationSet{fdname: "outbox.socket"}
	if names := unitValues(t, "outbox.socket", "Socket", "FileDescriptorName"); len(names) > 0 {
		set.fdname = names[len(names)-1]
	}
	_, port, _ := net.SplitHostPort(freeAddr(t))
	for _, v := range unitValues(t, "outbox.socket", "Socket", "ListenStream") {
		if filepath.IsAbs(v) {
			set.unix = append(set.unix, filepath.Join(dir, v))
			continue
		}
		host, _, err := net.SplitHostPort(v)
		if err != nil {
			t.Fatalf("outbox.socket: ListenStream=%s: %v", v, err)
		}
		addr := net.JoinHostPort(host, port)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Logf("leaving out %s: this host cannot listen there: %v", v, err)
			continue
		}
		l.Close()
		set.tcp = append(set.tcp, addr)
	}
	if len(set.tcp) == 0 || len(set.unix) == 0 {
		t.Fatalf("outbox.socket has no usable TCP or no unix socket: %+v", set)
	}
	return set
}

// Started with the sockets outbox.socket passes, named as systemd names
// them, the daemon matches each to an endpoint and answers on every one.
func TestSystemdUnitSocketSet(t *testing.T) {
	sa := socketActivate(t)
	dir := t.TempDir()
	set := unitSocketSet(t, dir)
	cfg := fmt.Sprintf("[spool]\ndir = %q\n\n[sendmail]\nsocket = %q\n\n", filepath.Join(dir, "spool"), set.unix[0])
	for _, a := range set.tcp {
		cfg += fmt.Sprintf("[[listener]]\naddress = %q\n\n", a)
	}
	cfg += "[[upstream]]\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\n"
	config := filepath.Join(dir, "outbox.toml")
	if err := os.WriteFile(config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{}
	var names []string
	for _, a := range append(append([]string{}, set.tcp...), set.unix...) {
		args = append(args, "-l", a)
		names = append(names, set.fdname)
		if err := os.MkdirAll(filepath.Dir(a), 0o755); err != nil && filepath.IsAbs(a) {
			t.Fatal(err)
		}
	}
	args = append(args, "--fdname="+strings.Join(names, ":"), "--", filepath.Join(bin, "outbox"), "serve", "--config", config)
	p := startDaemon(t, sa, nil, args...)
	waitFor(t, "systemd-socket-activate to listen", func() bool { return listening(set.tcp[0]) })

	for _, a := range set.tcp {
		greet(t, "tcp", a)
	}
	for _, a := range set.unix {
		greet(t, "unix", a)
	}
	for _, a := range append(append([]string{}, set.tcp...), set.unix...) {
		p.logged(t, "using socket passed by systemd", "address="+a)
	}
}

// greet opens an SMTP session at addr, says EHLO and QUIT.
func greet(t *testing.T, network, addr string) {
	t.Helper()
	conn, err := net.Dial(network, addr)
	if err != nil {
		t.Errorf("%s %s: %v", network, addr, err)
		return
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello("test.example"); err != nil {
		t.Errorf("%s %s: EHLO: %v", network, addr, err)
		return
	}
	if err := c.Quit(); err != nil {
		t.Errorf("%s %s: QUIT: %v", network, addr, err)
	}
}
