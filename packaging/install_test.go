package packaging

// The .deb, built by `make deb`, installed with dpkg into a fresh Debian
// root (debootstrap --variant=minbase, cached for the day), then removed
// and purged.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxmta/outbox/internal/testutil"
)

const (
	suite          = "bookworm"
	testVersion    = "0.0.0~test1"
	upgradeVersion = "0.0.0~test2"
)

// needRoot skips the test unless it runs as root (dpkg in a chroot), or
// fails it in CI, whose machines do.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("the package install test must run as root in CI (chroot, dpkg)")
	}
	t.Skip("the package install test needs root (chroot, dpkg)")
}

// buildDeb runs `make deb` on a copy of the source tree, as a user would,
// and returns the .deb. The copy keeps the test off the tree's build/.
func buildDeb(t *testing.T) string {
	t.Helper()
	make := testutil.NeedTool(t, "make")
	src := filepath.Join(t.TempDir(), "src")
	if err := copyTree(top, src); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(make, "-C", src, "deb", "VERSION="+testVersion)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(src, "build", "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %q, want one .deb", debs)
	}
	return debs[0]
}

// copyTree copies the regular files and directories of the source tree,
// less .git and build/.
func copyTree(from, to string) error {
	return filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() && (rel == ".git" || rel == "build") {
			return filepath.SkipDir
		}
		dst := filepath.Join(to, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(dst, 0o755)
		case info.Mode().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, b, info.Mode().Perm())
		}
		return nil
	})
}

// debianRoot returns a fresh Debian root of its own: a copy of one made
// by debootstrap, kept in the temporary directory for the day, from the
// mirror this machine's apt uses.
func debianRoot(t *testing.T) string {
	t.Helper()
	cached := cachedRoot(t)
	root := filepath.Join(t.TempDir(), "root")
	if out, err := exec.Command("cp", "-a", cached, root).CombinedOutput(); err != nil {
		t.Fatalf("copying the Debian root: %v\n%s", err, out)
	}
	return root
}

// cachedRoot returns the day's debootstrapped root, making it (once, under
// a lock, for concurrent test runs) if need be and removing older days'.
func cachedRoot(t *testing.T) string {
	t.Helper()
	debootstrap := testutil.NeedTool(t, "debootstrap")
	cache := filepath.Join(os.TempDir(), "outbox-test-debian")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(cache, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%s-minbase-%s", suite, time.Now().Format("20060102"))
	root := filepath.Join(cache, name)
	if _, err := os.Stat(root); err == nil {
		return root
	}
	entries, _ := os.ReadDir(cache)
	for _, e := range entries {
		if e.IsDir() {
			os.RemoveAll(filepath.Join(cache, e.Name()))
		}
	}
	mirror := aptMirror(t)
	tmp := root + ".tmp"
	start := time.Now()
	cmd := exec.Command(debootstrap, "--variant=minbase", suite, tmp, mirror)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		t.Fatalf("debootstrap --variant=minbase %s %s: %v\n%s", suite, mirror, err, out)
	}
	t.Logf("debootstrap from %s took %v (cached in %s for today)", mirror, time.Since(start).Round(time.Second), root)
	if err := os.Rename(tmp, root); err != nil {
		t.Fatal(err)
	}
	return root
}

// aptMirror returns the Debian mirror apt uses here for the suite, from
// /etc/apt/sources.list and sources.list.d (one-line and deb822 formats),
// or deb.debian.org.
func aptMirror(t *testing.T) string {
	t.Helper()
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append([]string{"/etc/apt/sources.list"}, files...)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if m := mirrorIn(string(b)); m != "" {
			return m
		}
	}
	return "http://deb.debian.org/debian"
}

// mirrorIn returns the first URI in a sources file that serves the suite.
func mirrorIn(text string) string {
	var uris, suites []string
	check := func() string {
		for _, s := range suites {
			if s == suite && len(uris) > 0 {
				return uris[0]
			}
		}
		return ""
	}
	sc := bufio.NewScanner(strings.NewReader(text + "\n\n"))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "deb" {
			if strings.HasPrefix(f[1], "[") { // deb [options] uri suite
				for len(f) > 1 && !strings.HasSuffix(f[0], "]") {
					f = f[1:]
				}
			}
			if len(f) >= 3 && f[2] == suite {
				return f[1]
			}
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		switch {
		case line == "":
			if m := check(); m != "" {
				return m
			}
			uris, suites = nil, nil
		case ok && strings.EqualFold(k, "URIs"):
			uris = strings.Fields(v)
		case ok && strings.EqualFold(k, "Suites"):
			suites = strings.Fields(v)
		}
	}
	return ""
}

// inRoot runs a command in the root as user ("" for root), with stdin,
// and returns its combined output.
func inRoot(t *testing.T, root, user, stdin string, args ...string) (string, error) {
	t.Helper()
	chroot := []string{root}
	if user != "" {
		chroot = []string{"--userspec=" + user, root}
	}
	cmd := exec.Command("chroot", append(chroot, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"}
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// mustRun runs a command in the root as root and fails the test if it fails.
func mustRun(t *testing.T, root string, args ...string) string {
	t.Helper()
	out, err := inRoot(t, root, "", "", args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// The .deb installs into a fresh Debian with dpkg -i alone: user, modes,
// links, conffile, enabled socket; an unprivileged user's sendmail drops
// mail through the set-group-ID binary while no daemon runs; reinstalling
// and upgrading keep the administrator's configuration and the queued
// mail; dpkg -r keeps the spool and the
// configuration, dpkg -P removes them.
func TestInstallDeb(t *testing.T) {
	needRoot(t)
	testutil.NeedTool(t, "chroot")
	start := time.Now()
	deb := buildDeb(t)
	built := time.Now()
	root := debianRoot(t)
	ready := time.Now()
	defer func() {
		t.Logf("build %v, Debian root %v, install checks %v",
			built.Sub(start).Round(time.Millisecond), ready.Sub(built).Round(time.Millisecond), time.Since(ready).Round(time.Millisecond))
	}()
	b, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "tmp/outbox.deb"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, root, "dpkg", "-i", "/tmp/outbox.deb")

	installed := append(append(spoolModes(t), stateModes...),
		want{"/usr/sbin/outbox", "root", "outbox", 0o2755},
		want{"/etc/outbox/outbox.toml", "root", "outbox", 0o640},
	)
	checkModes(t, root, installed)
	u, g := entry(t, root, "passwd", "outbox"), entry(t, root, "group", "outbox")
	if u == nil || g == nil || u[3] != g[2] || u[5] != spoolDir || !strings.HasSuffix(u[6], "nologin") {
		t.Errorf("user %q, group %q: want user outbox in group outbox, home %s, no login shell", u, g, spoolDir)
	}
	for _, link := range []string{"/usr/sbin/sendmail", "/usr/lib/sendmail", "/usr/bin/mailq", "/usr/bin/newaliases"} {
		target, err := os.Readlink(filepath.Join(root, link))
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(link), target)
		}
		if err != nil || target != "/usr/sbin/outbox" {
			t.Errorf("%s: link to %q (%v), want /usr/sbin/outbox", link, target, err)
		}
	}
	if out := mustRun(t, root, "dpkg-query", "-W", "-f=${Conffiles}", "outbox"); !strings.Contains(out, "/etc/outbox/outbox.toml") {
		t.Errorf("conffiles: %q, want /etc/outbox/outbox.toml", out)
	}
	if out := mustRun(t, root, "dpkg-query", "-W", "-f=${Provides}|${Conflicts}|${Replaces}", "outbox"); out != "mail-transport-agent|mail-transport-agent|mail-transport-agent" {
		t.Errorf("Provides|Conflicts|Replaces: %q, want mail-transport-agent for each", out)
	}
	for _, f := range []string{"/lib/systemd/system/outbox.service", "/lib/systemd/system/outbox.socket", "/usr/lib/sysusers.d/outbox.conf", "/usr/lib/tmpfiles.d/outbox.conf", "/usr/share/doc/outbox/README.md"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}
	if target, err := os.Readlink(filepath.Join(root, "etc/systemd/system/sockets.target.wants/outbox.socket")); err != nil || target != "/lib/systemd/system/outbox.socket" {
		t.Errorf("outbox.socket not enabled: %q, %v", target, err)
	}
	if out := mustRun(t, root, "outbox", "version"); !strings.Contains(out, testVersion) {
		t.Errorf("outbox version: %q, want %s", out, testVersion)
	}
	if out := mustRun(t, root, "outbox", "check", "--config-only"); !strings.Contains(out, "configuration OK") {
		t.Errorf("outbox check --config-only: %q", out)
	}

	// With no daemon, a user's sendmail drops the message into incoming/
	// as group outbox: mode 0440, owned by the user.
	out, err := inRoot(t, root, "nobody:nogroup", "Subject: packaged\n\nfrom the maildrop\n", "sendmail", "-i", "bob@example.net")
	if err != nil {
		t.Errorf("sendmail as nobody: %v\n%s", err, out)
	}
	drops, _ := os.ReadDir(filepath.Join(root, spoolDir, "incoming"))
	if len(drops) != 1 {
		t.Fatalf("incoming/ holds %d files, want the one drop", len(drops))
	}
	drop := filepath.Join(spoolDir, "incoming", drops[0].Name())
	checkModes(t, root, []want{{drop, "nobody", "outbox", 0o440}})

	// Reinstalling, and upgrading to a newer version (the same package
	// repacked with a higher Version), keep the modes, the queued mail
	// and the administrator's configuration.
	config := filepath.Join(root, "etc/outbox/outbox.toml")
	appendFile(t, config, "# edited by the administrator\n")
	mustRun(t, root, "sh", "-ec", `dpkg-deb -R /tmp/outbox.deb /tmp/up
		sed -i 's/^Version: .*/Version: `+upgradeVersion+`/' /tmp/up/DEBIAN/control
		dpkg-deb -b /tmp/up /tmp/outbox-up.deb >/dev/null`)
	for _, pkg := range []string{"/tmp/outbox.deb", "/tmp/outbox-up.deb"} {
		mustRun(t, root, "dpkg", "-i", pkg)
		checkModes(t, root, append(installed, want{drop, "nobody", "outbox", 0o440}))
		if b, _ := os.ReadFile(config); !bytes.Contains(b, []byte("# edited by the administrator")) {
			t.Errorf("dpkg -i %s replaced the edited configuration", pkg)
		}
	}
	if out := mustRun(t, root, "dpkg-query", "-W", "-f=${Version}", "outbox"); out != upgradeVersion {
		t.Errorf("after the upgrade dpkg has outbox %q, want %s", out, upgradeVersion)
	}

	mustRun(t, root, "dpkg", "-r", "outbox")
	for _, gone := range []string{"/usr/sbin/outbox", "/usr/sbin/sendmail", "/usr/lib/sendmail", "/usr/bin/mailq", "/usr/bin/newaliases", "/lib/systemd/system/outbox.service"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); err == nil {
			t.Errorf("dpkg -r left %s", gone)
		}
	}
	for _, kept := range []string{"/etc/outbox/outbox.toml", drop} {
		if _, err := os.Stat(filepath.Join(root, kept)); err != nil {
			t.Errorf("dpkg -r removed what it must keep: %v", err)
		}
	}

	mustRun(t, root, "dpkg", "-P", "outbox")
	for _, gone := range []string{"/etc/outbox", spoolDir, "/var/lib/outbox", "/etc/systemd/system/sockets.target.wants/outbox.socket", "/etc/systemd/system/outbox.socket"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); err == nil {
			t.Errorf("dpkg -P left %s", gone)
		}
	}
	if out, _ := inRoot(t, root, "", "", "dpkg-statoverride", "--list"); out != "" { // exit 1: none
		t.Errorf("dpkg -P left statoverrides:\n%s", out)
	}
	if out, _ := inRoot(t, root, "", "", "dpkg-query", "-W", "-f=${db:Status-Abbrev}", "outbox"); strings.HasPrefix(out, "i") || strings.HasPrefix(out, "r") {
		t.Errorf("after dpkg -P the package is %q", out)
	}
	if entry(t, root, "passwd", "outbox") == nil {
		t.Error("dpkg -P removed the user outbox; Debian keeps system users (files may still carry the uid)")
	}
}

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.WriteString(f, text); err != nil {
		t.Fatal(err)
	}
}
