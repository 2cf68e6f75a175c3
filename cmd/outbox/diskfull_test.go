package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/emersion/go-smtp"
)

// mountSpool puts the world's spool on a tmpfs of size bytes, so that the
// test can fill it. Mounting needs root, which CI has.
func mountSpool(t *testing.T, w *world, size int64) string {
	t.Helper()
	dir := filepath.Join(w.dir, "spool")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("a full disk is simulated with a tmpfs, and mounting one needs root (CAP_SYS_ADMIN): %v", err)
		}
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	// Registered after t.TempDir's removal and before the daemon's kill,
	// so it runs after the daemon is gone and before the directory goes.
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

func freeSpace(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// fillSpool writes a file that leaves about leave bytes free on the spool's
// file system, and returns its path.
func fillSpool(t *testing.T, dir string, leave int64) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	if err := os.WriteFile(p, make([]byte, freeSpace(t, dir)-leave), 0o600); err != nil {
		t.Fatal(err)
	}
	if free := freeSpace(t, dir); free > leave || free < leave/2 {
		t.Fatalf("filled the spool to %d bytes free, want about %d", free, leave)
	}
	return p
}

// wantSpoolFullReply checks an SMTP refusal for lack of space.
func wantSpoolFullReply(t *testing.T, reply string, err error) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 452 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 1}) {
		t.Fatalf("end of DATA on a full spool: %q, %v; want 452 4.3.1", reply, err)
	}
}

// wantSendmailFull checks that sendmail exited 75 saying the spool's disk
// is full, and where.
func wantSendmailFull(t *testing.T, spoolDir, out string, err error, also ...string) {
	t.Helper()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 75 {
		t.Fatalf("sendmail on a full spool: %v, want exit status 75\n%s", err, out)
	}
	for _, want := range append([]string{"sendmail: ", spoolDir, "is full", "free space there"}, also...) {
		if !strings.Contains(out, want) {
			t.Errorf("sendmail's message does not say %q:\n%s", want, out)
		}
	}
}

// spoolClean fails unless no state directory holds anything: no record, no
// temporary or partial file, nothing quarantined.
func spoolClean(t *testing.T, spoolDir string) {
	t.Helper()
	for _, st := range []string{"incoming", "queue", "hold", "failed", "corrupt"} {
		entries, err := os.ReadDir(filepath.Join(spoolDir, st))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			t.Errorf("%s/ holds %s after a refused message", st, e.Name())
		}
	}
}

// A full spool refuses new mail with temporary errors (SMTP 452 4.3.1,
// sendmail exit 75) and leaves nothing half-written; once there is room,
// mail is taken again and delivered. The second case has room for the
// message, but less than the min_free reserve.
func TestDiskFull(t *testing.T) {
	t.Run("disk full", func(t *testing.T) {
		w := newWorld(t)
		spoolDir := mountSpool(t, w, 1<<20)
		w.startServe(t) // the upstream stays down until the end: nothing drains
		filler := fillSpool(t, spoolDir, 32<<10)
		big := "Subject: big\r\nX-Marker: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 98)+"\r\n", 1000) // ~100 KB

		reply, err := w.smtpTry(t, "app@example.com", []string{"bob@example.net"}, big)
		wantSpoolFullReply(t, reply, err)
		out, err := w.sendmail(t, big, "-i", "carol@example.net")
		wantSendmailFull(t, spoolDir, out, err, "452 4.3.1")
		if q := w.queue(t); len(q) != 0 {
			t.Errorf("queue after refusals: %+v", q)
		}
		spoolClean(t, spoolDir)

		w.serve.stop(t, syscall.SIGTERM)
		if log := w.serve.out.String(); !strings.Contains(log, "spool full") {
			t.Errorf("the daemon's log does not say %q:\n%s", "spool full", log)
		}
		// The daemon is down: sendmail writes to incoming/ itself.
		out, err = w.sendmail(t, big, "-i", "dave@example.net")
		wantSendmailFull(t, spoolDir, out, err, "no space left on device")
		spoolClean(t, spoolDir)

		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		if out, err := w.sendmail(t, strings.Replace(big, "X-Marker: big", "X-Marker: big-drop", 1), "-i", "dave@example.net"); err != nil {
			t.Fatalf("sendmail with room again, daemon down: %v\n%s", err, out)
		}
		w.startServe(t)
		if reply, err := w.smtpTry(t, "app@example.com", []string{"bob@example.net"}, strings.Replace(big, "X-Marker: big", "X-Marker: big-smtp", 1)); err != nil || !strings.Contains(reply, "queued as") {
			t.Fatalf("SMTP with room again: %q, %v", reply, err)
		}
		if out, err := w.sendmail(t, strings.Replace(big, "X-Marker: big", "X-Marker: big-socket", 1), "-i", "carol@example.net"); err != nil {
			t.Fatalf("sendmail with room again: %v\n%s", err, out)
		}
		w.startSink(t)
		for _, m := range []string{"X-Marker: big-drop\r\n", "X-Marker: big-smtp\r\n", "X-Marker: big-socket\r\n"} {
			waitFor(t, m, func() bool { return w.count(t, m) == 1 })
		}
		waitFor(t, "the queue to empty", func() bool { return len(w.queue(t)) == 0 })
		if n := w.count(t, "X-Marker: big\r\n"); n != 0 {
			t.Errorf("a refused message was delivered %d times", n)
		}
	})

	t.Run("below min_free", func(t *testing.T) {
		w := newWorld(t)
		w.edit(t, "[spool]\n", "[spool]\nmin_free = \"1MB\"\n")
		spoolDir := mountSpool(t, w, 4<<20)
		w.startServe(t)
		filler := fillSpool(t, spoolDir, 512<<10)
		small := "Subject: small\r\nX-Marker: small\r\n\r\nfits easily, but not above the reserve\r\n"

		reply, err := w.smtpTry(t, "app@example.com", []string{"bob@example.net"}, small)
		if err == nil {
			t.Fatalf("SMTP below min_free: %q; does outbox serve pass [spool] min_free to the spool (sp.SetMinFree)?", reply)
		}
		wantSpoolFullReply(t, reply, err)
		out, err := w.sendmail(t, small, "-i", "carol@example.net")
		wantSendmailFull(t, spoolDir, out, err)
		w.serve.stop(t, syscall.SIGTERM)
		out, err = w.sendmail(t, small, "-i", "dave@example.net")
		wantSendmailFull(t, spoolDir, out, err, "min_free")
		spoolClean(t, spoolDir)

		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		w.startServe(t)
		if reply, err := w.smtpTry(t, "app@example.com", []string{"bob@example.net"}, strings.Replace(small, "X-Marker: small", "X-Marker: small-ok", 1)); err != nil || !strings.Contains(reply, "queued as") {
			t.Fatalf("SMTP above min_free: %q, %v", reply, err)
		}
		w.startSink(t)
		waitFor(t, "the message at the upstream", func() bool { return w.count(t, "X-Marker: small-ok\r\n") == 1 })
		if n := w.count(t, "X-Marker: small\r\n"); n != 0 {
			t.Errorf("a refused message was delivered %d times", n)
		}
	})
}
