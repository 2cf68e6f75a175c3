// Package packaging holds no code: its tests check what the packages
// install (the configuration, the users, the directories and their modes)
// and install the .deb into a fresh Debian root.
package packaging

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/outboxmta/outbox/config"
	"github.com/outboxmta/outbox/internal/testutil"
	"github.com/outboxmta/outbox/spool"
)

const (
	top        = ".."
	unitDir    = top + "/systemd"
	socketUnit = unitDir + "/outbox.socket"
	tmpfiles   = unitDir + "/tmpfiles.d/outbox.conf"
	sysusers   = unitDir + "/sysusers.d/outbox.conf"
	spoolDir   = "/var/spool/outbox"
)

// want is an installed path's owner, group and permission bits
// (docs/design.md, "Set-group-ID maildrop").
type want struct {
	path        string
	user, group string
	perm        uint32 // including set-group-ID and sticky bits
}

// spoolModes lists the spool's directories, as the design wants them:
// every state directory spool.Open makes, 0750 outbox:outbox, except
// incoming/, the maildrop (1730).
func spoolModes(t *testing.T) []want {
	t.Helper()
	dir := t.TempDir()
	if _, err := spool.Open(dir, nil); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := []want{{spoolDir, "outbox", "outbox", 0o750}}
	for _, e := range entries {
		perm := uint32(0o750)
		if e.Name() == string(spool.Incoming) {
			perm = 0o1730
		}
		out = append(out, want{filepath.Join(spoolDir, e.Name()), "outbox", "outbox", perm})
	}
	return out
}

// stateModes lists the directories outside the spool that tmpfiles.d
// makes: the sendmail socket's, and the one for rotated OAuth2 tokens.
var stateModes = []want{
	{"/run/outbox", "outbox", "outbox", 0o755},
	{"/var/lib/outbox", "outbox", "outbox", 0o700},
}

// checkModes fails for each path under root whose owner, group or
// permissions differ from w, naming users as root's own databases do.
func checkModes(t *testing.T, root string, ws []want) {
	t.Helper()
	for _, w := range ws {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(root, w.path), &st); err != nil {
			t.Errorf("%s: %v", w.path, err)
			continue
		}
		user, group := nameOf(t, root, "passwd", st.Uid), nameOf(t, root, "group", st.Gid)
		if perm := st.Mode & 0o7777; user != w.user || group != w.group || perm != w.perm {
			t.Errorf("%s is %s:%s %04o, want %s:%s %04o", w.path, user, group, perm, w.user, w.group, w.perm)
		}
	}
}

// entry returns the fields of name's line in root's /etc/passwd or
// /etc/group, nil if there is none.
func entry(t *testing.T, root, db, name string) []string {
	t.Helper()
	for _, f := range dbLines(t, root, db) {
		if f[0] == name {
			return f
		}
	}
	return nil
}

// nameOf returns the name of id in root's /etc/passwd or /etc/group.
func nameOf(t *testing.T, root, db string, id uint32) string {
	t.Helper()
	for _, f := range dbLines(t, root, db) {
		if len(f) > 2 && f[2] == strconv.FormatUint(uint64(id), 10) {
			return f[0]
		}
	}
	return "#" + strconv.FormatUint(uint64(id), 10)
}

func dbLines(t *testing.T, root, db string) [][]string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "etc", db))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, strings.Split(sc.Text(), ":"))
	}
	return out
}

// packagedConfig returns the configuration the packages install, made as
// the Makefile makes it.
func packagedConfig(t *testing.T) string {
	t.Helper()
	example, err := os.ReadFile(filepath.Join(top, "config.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sed", "-f", copyTemp(t, "outbox.toml.sed"))
	cmd.Stdin = bytes.NewReader(example)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sed -f outbox.toml.sed: %v", err)
	}
	path := filepath.Join(t.TempDir(), "outbox.toml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The packaged configuration is valid and agrees with the units: it
// serves exactly the sockets outbox.socket passes (the daemon refuses to
// start on a passed socket it has no endpoint for), spools where
// tmpfiles.d makes the spool, and takes the host's own name.
func TestPackagedConfig(t *testing.T) {
	path := packagedConfig(t)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("the packaged configuration does not load: %v", err)
	}
	var tcp, unix []string
	for _, v := range testutil.UnitValues(t, socketUnit, "Socket", "ListenStream") {
		if filepath.IsAbs(v) {
			unix = append(unix, v)
		} else {
			tcp = append(tcp, v)
		}
	}
	var listeners []string
	for _, l := range cfg.Listeners {
		listeners = append(listeners, l.Address)
	}
	slices.Sort(tcp)
	slices.Sort(listeners)
	if !slices.Equal(listeners, tcp) {
		t.Errorf("configured listeners %q, outbox.socket listens on %q", listeners, tcp)
	}
	if !slices.Equal(unix, []string{cfg.Sendmail.Socket}) {
		t.Errorf("sendmail socket %q, outbox.socket's unix sockets %q", cfg.Sendmail.Socket, unix)
	}
	if cfg.Spool.Dir != spoolDir {
		t.Errorf("spool dir %q, want %q", cfg.Spool.Dir, spoolDir)
	}
	if host, _ := os.Hostname(); cfg.Hostname != host {
		t.Errorf("hostname %q, want the host's name %q", cfg.Hostname, host)
	}
	if len(cfg.Aliases) != 0 {
		t.Errorf("the example's aliases took effect: %v", cfg.Aliases)
	}
}

// systemd-sysusers and systemd-tmpfiles, given our files, make the user
// and the directories the design wants, and tmpfiles.d covers every
// directory of the spool (a set-group-ID sendmail cannot create one).
func TestSysusersTmpfiles(t *testing.T) {
	sysusersBin := testutil.NeedTool(t, "systemd-sysusers")
	tmpfilesBin := testutil.NeedTool(t, "systemd-tmpfiles")
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sysusersBin, "--root="+root, copyTemp(t, sysusers)).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	if u, g := entry(t, root, "passwd", "outbox"), entry(t, root, "group", "outbox"); u == nil || g == nil || u[3] != g[2] {
		t.Fatalf("user %q, group %q: want user outbox in group outbox", u, g)
	}
	if out, err := exec.Command(tmpfilesBin, "--root="+root, "--create", copyTemp(t, tmpfiles)).CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("systemd-tmpfiles: %v\n%s", err, out)
	}
	checkModes(t, root, append(spoolModes(t), stateModes...))
}

// copyTemp returns the path of a copy of file. The systemd tools given
// --root read relative paths under the root; and a file the test reads
// itself takes part in go test's caching, one only a subprocess reads
// does not.
func copyTemp(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), filepath.Base(file))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
