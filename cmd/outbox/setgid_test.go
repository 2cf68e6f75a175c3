package main

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The set-group-ID maildrop as packaging installs it: with the daemon down,
// an unprivileged user's sendmail drops the message into a mode 1730
// incoming/ (write and search only for the group), the drop is mode 0440
// and unreadable to its author's peers, and the daemon delivers it later
// naming that user.
func TestSetgidMaildrop(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to install a set-group-ID binary and switch users")
	}
	setpriv := needTool(t, "setpriv")
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	group, err := user.LookupGroup("mail")
	if err != nil {
		t.Skipf("no group mail to stand in for outbox: %v", err)
	}
	gid, _ := strconv.Atoi(group.Gid)

	w := newWorld(t)
	// The world lives under t.TempDir (TMP/TestName/001), private to root:
	// let nobody reach the configuration and the spool, as on a real host.
	for _, d := range []string{filepath.Dir(w.dir), w.dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(w.config, 0o644); err != nil {
		t.Fatal(err)
	}
	w.startServe(t) // creates the spool
	w.serve.stop(t, syscall.SIGTERM)
	// Modes as docs/design.md asks of packaging, with group mail standing
	// in for outbox: the spool root 0750 and incoming/ 1730, both the group's.
	incoming := filepath.Join(w.dir, "spool", "incoming")
	for _, d := range []string{filepath.Dir(incoming), incoming} {
		if err := os.Chown(d, 0, gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(incoming, 0o1730); err != nil {
		t.Fatal(err)
	}

	// A set-group-ID copy of the binary that reads only this world's
	// configuration, as a package builds it with its own path.
	sbin := filepath.Join(w.dir, "sbin")
	if err := os.Mkdir(sbin, 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-ldflags", "-X main.maildropConfig="+w.config, "-o", filepath.Join(sbin, "outbox"), ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := os.Chown(filepath.Join(sbin, "outbox"), 0, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(sbin, "outbox"), 0o755|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("outbox", filepath.Join(sbin, "sendmail")); err != nil {
		t.Fatal(err)
	}

	asNobody := func(name string, args ...string) *exec.Cmd {
		return exec.Command(setpriv, append([]string{"--reuid=" + nobody.Uid, "--regid=" + nobody.Gid, "--clear-groups", name}, args...)...)
	}
	cmd := asNobody(filepath.Join(sbin, "sendmail"), "-i", "bob@example.net")
	cmd.Stdin = strings.NewReader("Subject: setgid drop\nX-Marker: setgid\n\nfrom nobody\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sendmail as nobody: %v\n%s", err, out)
	}

	entries, err := os.ReadDir(incoming)
	if err != nil || len(entries) != 1 {
		t.Fatalf("incoming/ holds %d entries (%v), want the one drop", len(entries), err)
	}
	drop := filepath.Join(incoming, entries[0].Name())
	fi, err := os.Stat(drop)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if strconv.Itoa(int(st.Uid)) != nobody.Uid || int(st.Gid) != gid || fi.Mode().Perm() != 0o440 {
		t.Errorf("drop is %v uid %d gid %d, want 0440 owned by nobody, group %s", fi.Mode(), st.Uid, st.Gid, group.Name)
	}
	// The group serves only the drop: other uses give it up, so nobody
	// cannot list or read the spool through the binary.
	if out, err := asNobody(filepath.Join(sbin, "outbox"), "queue", "show", entries[0].Name()).CombinedOutput(); err == nil {
		t.Errorf("nobody read a queued message through the set-group-ID binary:\n%s", out)
	}

	w.startSink(t)
	w.startServe(t)
	waitFor(t, "the drop at the upstream", func() bool { return w.count(t, "X-Marker: setgid") == 1 })
	m := w.delivered(t)[0]
	for _, want := range []string{"X-Sink-Mail-From: <nobody@example.com>", "X-Sink-Rcpt-To: <bob@example.net>",
		"Received: by relay.test (Outbox, from userid " + nobody.Uid + ")"} {
		if !strings.Contains(m, want) {
			t.Errorf("delivered drop lacks %q:\n%s", want, m)
		}
	}
}
