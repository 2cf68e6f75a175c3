package spool

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"
)

func TestHoldReleaseDelete(t *testing.T) {
	s := openTemp(t)
	env := put(t, s, "x\r\n", "b@example.com")

	// Not while a runner delivers it.
	l, err := s.Lock(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Hold(env.ID); !errors.Is(err, ErrLocked) {
		t.Errorf("Hold during delivery: %v, want ErrLocked", err)
	}
	l.Close()

	if err := s.Hold(env.ID); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.Find(env.ID); st != Hold {
		t.Fatalf("after Hold the message is in %q", st)
	}
	if _, err := s.Lock(env.ID); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a runner can still take a held message: %v", err)
	}
	if err := s.Release(env.ID); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.Find(env.ID); st != Queue {
		t.Fatalf("after Release the message is in %q", st)
	}
	if err := s.Delete(env.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Find(env.ID); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Delete: %v", err)
	}
}

func TestRequeueFromFailed(t *testing.T) {
	s := openTemp(t)
	env := put(t, s, "x\r\n", "b@example.com", "c@example.com")
	l, _ := s.Lock(env.ID)
	e := l.Envelope()
	e.Recipients[0].Status, e.Recipients[1].Status = Delivered, Failed
	e.LastError = "550 no"
	if err := l.MoveTo(FailedQ); err != nil {
		t.Fatal(err)
	}
	l.Close()

	now := time.Now().Add(time.Hour)
	if err := s.Requeue(env.ID, now); err != nil {
		t.Fatal(err)
	}
	got, _, err := s.Read(Queue, env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Recipients[0].Status != Delivered || got.Recipients[1].Status != Pending {
		t.Errorf("recipients after requeue: %+v", got.Recipients)
	}
	if !got.NextAttempt.Equal(now) || !got.Since().Equal(now) || got.LastError != "" {
		t.Errorf("envelope after requeue: %+v", got)
	}
	if _, err := s.Find(env.ID); err != nil {
		t.Error(err)
	}
}

// A drop's envelope cannot claim another submitter: the daemon records the
// file's owner.
func TestAcceptRecordsOwner(t *testing.T) {
	s := openTemp(t)
	liar := 4242
	env := &Envelope{From: "a@x", Origin: Origin{Kind: "smtp", UID: &liar},
		Recipients: []Recipient{{Addr: "b@x", Status: Pending}}}
	if err := s.Put(Incoming, env, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Accept(env.ID); err != nil {
		t.Fatal(err)
	}
	got, _, err := s.Read(Queue, env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Origin.Kind != "maildrop" || got.Origin.UID == nil || *got.Origin.UID != os.Getuid() {
		t.Errorf("origin after Accept = %+v, want maildrop by uid %d", got.Origin, os.Getuid())
	}
	if _, err := s.Find(env.ID); err != nil {
		t.Error(err)
	}
}
