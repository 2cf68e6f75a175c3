package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestNoSpaceMatches(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{&fs.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}, true},
		{&fs.PathError{Op: "write", Path: "/x", Err: syscall.EDQUOT}, true},
		{&os.LinkError{Op: "rename", Old: "/a", New: "/b", Err: syscall.ENOSPC}, true},
		{fmt.Errorf("wrapped: %w", ErrNoSpace), true},
		{&fs.PathError{Op: "write", Path: "/x", Err: syscall.EIO}, false},
		{errors.New("no space left on device"), false}, // only real errnos count
	} {
		err := fmt.Errorf("spool: write X: %w", noSpace(tt.err))
		if got := errors.Is(err, ErrNoSpace); got != tt.want {
			t.Errorf("errors.Is(%v, ErrNoSpace) = %v, want %v", err, got, tt.want)
		}
		// The system's error stays visible, in the chain and in the text.
		if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.err.Error()) {
			t.Errorf("%v lost %v", err, tt.err)
		}
	}
	if noSpace(nil) != nil {
		t.Error("noSpace(nil) != nil")
	}
}

// The reserve refuses new records, and only new records: queued mail can
// still be updated and moved so that it keeps flowing out.
func TestMinFree(t *testing.T) {
	s := openTemp(t)
	env := put(t, s, "Subject: x\r\n\r\nqueued before\r\n", "b@example.com")
	free, err := s.FreeSpace()
	if err != nil || free <= 0 {
		t.Fatalf("FreeSpace = %d, %v", free, err)
	}

	s.SetMinFree(free + 1<<40) // more than this file system will ever have
	_, err = s.Create(Queue)
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Create below the reserve: %v, want ErrNoSpace", err)
	}
	for _, want := range []string{s.Root(), "min_free"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	e := &Envelope{From: "a@x", Recipients: []Recipient{{Addr: "b@x", Status: Pending}}}
	if err := s.Put(Incoming, e, strings.NewReader("x\r\n")); !errors.Is(err, ErrNoSpace) {
		t.Errorf("Put below the reserve: %v, want ErrNoSpace", err)
	}
	for _, st := range []State{Queue, Incoming} {
		if entries, _ := os.ReadDir(s.dir(st)); len(entries) != map[State]int{Queue: 1, Incoming: 0}[st] {
			t.Errorf("%s/ holds %d entries after refusals", st, len(entries))
		}
	}

	l, err := s.Lock(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	l.Envelope().Attempts++
	if err := l.Update(); err != nil {
		t.Errorf("Update below the reserve: %v", err)
	}
	l.Close()
	if err := s.Move(env.ID, Queue, Hold); err != nil {
		t.Errorf("Move below the reserve: %v", err)
	}

	for _, min := range []int64{0, -1, 1} {
		s.SetMinFree(min)
		w, err := s.Create(Queue)
		if err != nil {
			t.Errorf("Create with min_free %d: %v", min, err)
			continue
		}
		w.Abort()
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory and returns
// it; the test is skipped where mounting is not allowed.
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		if errors.Is(err, unix.EPERM) {
			t.Skipf("mounting a tmpfs needs root (CAP_SYS_ADMIN): %v", err)
		}
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}

// fillTo writes a file that leaves exactly leave bytes free (page-aligned
// on tmpfs), and returns its path.
func fillTo(t *testing.T, s *Spool, leave int64) string {
	t.Helper()
	free, err := s.FreeSpace()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(s.Root(), "filler")
	if err := os.WriteFile(p, make([]byte, free-leave), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.FreeSpace(); got != leave {
		t.Fatalf("filled the file system to %d bytes free, want %d", got, leave)
	}
	return p
}

// assertEmpty fails unless every state directory is empty: no record, no
// temporary file, nothing quarantined.
func assertEmpty(t *testing.T, s *Spool) {
	t.Helper()
	for _, st := range states {
		entries, err := os.ReadDir(s.dir(st))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			t.Errorf("%s/ holds %s", st, e.Name())
		}
	}
}

// On a full file system every step of writing a record fails with
// ErrNoSpace and leaves nothing behind, and writing works again once
// there is room.
func TestDiskFull(t *testing.T) {
	page := int64(os.Getpagesize())
	s, err := Open(mountTmpfs(t, 64*page), nil)
	if err != nil {
		t.Fatal(err)
	}
	env := func() *Envelope {
		return &Envelope{From: "a@x", Recipients: []Recipient{{Addr: "b@x", Status: Pending}}}
	}

	t.Run("message larger than the free space", func(t *testing.T) {
		filler := fillTo(t, s, 4*page)
		defer os.Remove(filler)
		w, err := s.Create(Queue)
		if err != nil {
			t.Fatal(err)
		}
		_, err = w.Write(bytes.Repeat([]byte("x"), int(8*page)))
		if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Write: %v, want ErrNoSpace and ENOSPC", err)
		}
		w.Abort()
		assertEmpty(t, s)

		err = s.Put(Queue, env(), bytes.NewReader(make([]byte, 8*page)))
		if !errors.Is(err, ErrNoSpace) {
			t.Fatalf("Put: %v, want ErrNoSpace", err)
		}
		assertEmpty(t, s)
	})

	t.Run("no room for the envelope", func(t *testing.T) {
		// One page left: the header and message fill it exactly, so the
		// envelope and trailer do not fit and Commit fails.
		filler := fillTo(t, s, page)
		defer os.Remove(filler)
		w, err := s.Create(Queue)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(make([]byte, page-int64(len(header)))); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(env()); !errors.Is(err, ErrNoSpace) {
			t.Fatalf("Commit: %v, want ErrNoSpace", err)
		}
		assertEmpty(t, s)
	})

	t.Run("no room for the header", func(t *testing.T) {
		filler := fillTo(t, s, 0)
		defer os.Remove(filler)
		if _, err := s.Create(Incoming); !errors.Is(err, ErrNoSpace) {
			t.Fatalf("Create: %v, want ErrNoSpace", err)
		}
		assertEmpty(t, s)
	})

	t.Run("room again", func(t *testing.T) {
		e := env()
		if err := s.Put(Queue, e, bytes.NewReader(make([]byte, 8*page))); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Read(Queue, e.ID); err != nil {
			t.Fatal(err)
		}
	})
}

// The reserve is measured on the real file system.
func TestMinFreeOnTmpfs(t *testing.T) {
	page := int64(os.Getpagesize())
	s, err := Open(mountTmpfs(t, 64*page), nil)
	if err != nil {
		t.Fatal(err)
	}
	filler := fillTo(t, s, 16*page)
	s.SetMinFree(32 * page)
	// A small message would fit, but would eat into the reserve.
	if err := s.Put(Queue, &Envelope{From: "a@x"}, strings.NewReader("x\r\n")); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Put below min_free: %v, want ErrNoSpace", err)
	}
	assertEmpty(t, s)
	os.Remove(filler)
	if err := s.Put(Queue, &Envelope{From: "a@x"}, strings.NewReader("x\r\n")); err != nil {
		t.Fatalf("Put above min_free: %v", err)
	}
}
