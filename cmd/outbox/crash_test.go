package main

// Crash tests: outbox serve is killed with SIGKILL while concurrent SMTP
// clients and sendmail are submitting, again and again, and the spool's
// contract is checked on what the upstream finally receives: every message
// answered with 250 (or sendmail's exit 0) is delivered, whole, and (while
// the upstream was down during the kills) exactly once.

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/outboxmta/outbox/sendmail"
)

// crashMessage is the message submitted for marker: a few lines, one long,
// and a last line naming the marker so that a truncated copy is recognised.
func crashMessage(marker string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Subject: crash test %s\r\nX-Marker: %s\r\n\r\n", marker, marker)
	for i := range 5 {
		fmt.Fprintf(&b, "line %d of %s\r\n", i, marker)
	}
	fmt.Fprintf(&b, "%s\r\n", strings.Repeat("0123456789", 100))
	fmt.Fprintf(&b, "END-%s\r\n", marker)
	return b.String()
}

// ledger records, across all clients and cycles, every message a client
// started to submit and those whose end of DATA was answered with 2xx.
type ledger struct {
	mu    sync.Mutex
	tried map[string]bool
	acked map[string]string // marker -> the DATA reply
}

func newLedger() *ledger { return &ledger{tried: map[string]bool{}, acked: map[string]string{}} }

func (l *ledger) try(marker string) {
	l.mu.Lock()
	l.tried[marker] = true
	l.mu.Unlock()
}

func (l *ledger) ack(marker, reply string) {
	l.mu.Lock()
	l.acked[marker] = reply
	l.mu.Unlock()
}

// submitLoop is one SMTP client: on one connection it submits the messages
// prefix-0, prefix-1, … until it has sent max of them or an error ends it,
// and returns that error (nil after max). It never calls t.Fatal, so it can
// run in its own goroutine and die with the server.
func submitLoop(addr, prefix string, max int, l *ledger) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = 30*time.Second, 30*time.Second
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	for n := range max {
		marker := fmt.Sprintf("%s-%d", prefix, n)
		l.try(marker)
		if err := c.Mail("app@example.com", nil); err != nil {
			return err
		}
		if err := c.Rcpt("x@example.net", nil); err != nil {
			return err
		}
		d, err := c.Data()
		if err != nil {
			return err
		}
		if _, err := d.Write([]byte(crashMessage(marker))); err != nil {
			return err
		}
		resp, err := d.CloseWithResponse()
		if err != nil {
			return err
		}
		l.ack(marker, resp.StatusText)
	}
	c.Quit()
	return nil
}

// sendmailLoop is one program calling sendmail again and again, marker
// prefix-0, prefix-1, …, until three calls after killed is set: exit
// status 0 counts as acknowledged (queued through the daemon's socket, or
// dropped into incoming/ while the daemon is down), 75 as not (the daemon
// vanished after the message was sent: it may or may not be queued). The
// message has every header sendmail would add, so that it arrives as
// crashMessage. It returns how many were acknowledged after the kill.
func sendmailLoop(t *testing.T, w *world, prefix string, killed *atomic.Bool, l *ledger) (afterKill int) {
	for n, extra := 0, 0; extra < 3; n++ {
		if killed.Load() {
			extra++
		}
		marker := fmt.Sprintf("%s-%d", prefix, n)
		l.try(marker)
		msg := fmt.Sprintf("From: app@example.com\r\nTo: x@example.net\r\nDate: Mon, 2 Jan 2006 15:04:05 +0000\r\n"+
			"Message-ID: <%s@client.test>\r\n%s", marker, crashMessage(marker))
		out, err := w.sendmail(t, msg, "-i", "x@example.net")
		var exit *exec.ExitError
		switch {
		case err == nil:
			l.ack(marker, "sendmail exit 0")
			if extra > 0 {
				afterKill++
			}
		case errors.As(err, &exit) && exit.ExitCode() == sendmail.ExTempFail:
		default:
			t.Errorf("sendmail %s: %v\n%s", marker, err, out)
			return afterKill
		}
	}
	return afterKill
}

// crashCycles starts outbox serve cycles times, each time runs clients
// concurrent SMTP submitters and one program calling sendmail, and kills
// the daemon with SIGKILL after a random 50–400 ms. The sendmail caller
// goes on for a few messages after the kill, which it drops into
// incoming/ for the next start to take in. It returns what the clients
// were told.
func crashCycles(t *testing.T, w *world, cycles, clients, perClient int) *ledger {
	t.Helper()
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("kill delays from seed %d", seed)
	l := newLedger()
	for cycle := range cycles {
		w.startServe(t)
		var killed atomic.Bool
		var running atomic.Int32
		var wg sync.WaitGroup
		for client := range clients {
			running.Add(1)
			wg.Go(func() {
				defer running.Add(-1)
				err := submitLoop(w.listen, fmt.Sprintf("crash-%d-%d", cycle, client), perClient, l)
				var reply *smtp.SMTPError
				switch {
				case err == nil:
				case errors.As(err, &reply):
					// A reply the daemon chose to send: never expected.
					t.Errorf("cycle %d client %d: %v", cycle, client, err)
				case !killed.Load():
					t.Errorf("cycle %d client %d: %v before the kill", cycle, client, err)
				}
			})
		}
		var dropped int
		wg.Go(func() {
			dropped = sendmailLoop(t, w, fmt.Sprintf("crash-%d-%d", cycle, clients), &killed, l)
		})
		delay := 50*time.Millisecond + time.Duration(rng.Int64N(int64(350*time.Millisecond)))
		time.Sleep(delay)
		killed.Store(true)
		busy := running.Load()
		w.serve.stop(t, syscall.SIGKILL)
		wg.Wait()
		l.mu.Lock()
		t.Logf("cycle %d: killed after %v with %d of %d SMTP clients submitting; %d acknowledged so far, %d by sendmail after the kill",
			cycle, delay, busy, clients, len(l.acked), dropped)
		l.mu.Unlock()
	}
	return l
}

var markerRE = regexp.MustCompile(`X-Marker: (crash-[0-9]+-[0-9]+-[0-9]+)\r\n`)

// crashReport is what the upstream received, checked against the ledger.
type crashReport struct {
	delivered map[string]int // marker -> copies received
	unacked   int            // messages delivered though never acknowledged
}

// checkDelivered reads every message the sink stored, fails the test for
// any that is not exactly one whole message a client submitted, and counts
// the copies of each marker.
func checkDelivered(t *testing.T, w *world, l *ledger) crashReport {
	t.Helper()
	r := crashReport{delivered: map[string]int{}}
	for _, m := range w.delivered(t) {
		found := markerRE.FindAllStringSubmatch(m, -1)
		if len(found) != 1 {
			t.Errorf("delivered message with %d markers:\n%.2000s", len(found), m)
			continue
		}
		marker := found[0][1]
		if !l.tried[marker] {
			t.Errorf("delivered %s, which no client submitted", marker)
			continue
		}
		if !strings.HasSuffix(m, "\r\n"+crashMessage(marker)) {
			t.Errorf("%s delivered damaged or incomplete (acknowledged: %v):\n%.3000s", marker, l.acked[marker] != "", m)
		}
		r.delivered[marker]++
		if _, ok := l.acked[marker]; !ok && r.delivered[marker] == 1 {
			r.unacked++
		}
	}
	return r
}

// ackedArrived reports whether every acknowledged message is at the upstream.
func ackedArrived(t *testing.T, w *world, l *ledger) bool {
	got := map[string]bool{}
	for _, m := range w.delivered(t) {
		for _, f := range markerRE.FindAllStringSubmatch(m, -1) {
			got[f[1]] = true
		}
	}
	for marker := range l.acked {
		if !got[marker] {
			return false
		}
	}
	return true
}

// waitDelivered waits until the queue is empty and every acknowledged
// message has arrived. An empty queue means every record was delivered and
// removed, so an acknowledged message still missing then is lost: it is
// waited for a few seconds more only to make sure, and left for the
// caller's checks to report by name.
func waitDelivered(t *testing.T, w *world, l *ledger) {
	t.Helper()
	waitFor(t, "the queue to empty", func() bool { return queueEmpty(t, w) })
	for range 25 {
		if ackedArrived(t, w, l) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// queueEmpty reports whether queue/, hold/ and incoming/ hold no record: a
// cheap look at the directories first (temporary files left by the kills
// do not count), then `outbox queue list`.
func queueEmpty(t *testing.T, w *world) bool {
	for _, st := range []string{"queue", "hold", "incoming"} {
		entries, err := os.ReadDir(filepath.Join(w.dir, "spool", st))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), "tmp-") {
				return false
			}
		}
	}
	return len(w.queue(t)) == 0
}

// checkSpoolClean fails the test if corrupt/ or failed/ holds anything, and
// logs the temporary files the kills left behind.
func checkSpoolClean(t *testing.T, w *world) {
	t.Helper()
	for _, st := range []string{"corrupt", "failed"} {
		dir := filepath.Join(w.dir, "spool", st)
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			t.Errorf("%s/%s (%d bytes):\n%.1500s", st, e.Name(), len(b), b)
		}
	}
	tmp, _ := filepath.Glob(filepath.Join(w.dir, "spool", "*", "tmp-*"))
	t.Logf("%d temporary files left by the kills", len(tmp))
}

// TestCrashUnderLoad kills outbox serve again and again while clients
// submit, with the upstream down so that nothing leaves the queue until the
// end: then every acknowledged message must arrive exactly once, and nothing
// may arrive damaged.
func TestCrashUnderLoad(t *testing.T) {
	const cycles, clients, perClient = 5, 8, 100 // at most 4000 messages
	w := newWorld(t)
	w.holdPorts(t)
	l := crashCycles(t, w, cycles, clients, perClient)
	if len(l.acked) == 0 {
		t.Fatal("no message was acknowledged")
	}

	w.startSink(t)
	w.startServe(t)
	waitDelivered(t, w, l)
	r := checkDelivered(t, w, l)
	dups := 0
	for marker := range l.acked {
		if n := r.delivered[marker]; n > 1 {
			dups++
			t.Errorf("%s delivered %d times", marker, n)
		}
	}
	for marker, n := range r.delivered {
		if _, ok := l.acked[marker]; !ok && n > 1 {
			dups++
			t.Errorf("%s (never acknowledged) delivered %d times", marker, n)
		}
	}
	checkAllArrived(t, w, l, r)
	checkSpoolClean(t, w)
	t.Logf("submitted %d, acknowledged %d, delivered %d, unacknowledged-but-delivered %d, duplicates %d",
		len(l.tried), len(l.acked), len(r.delivered), r.unacked, dups)
}

// TestCrashDuplicatesWithUpstreamUp kills outbox serve while it submits and
// delivers at once. A kill between the upstream's 250 and the removal of
// the record makes the message go out again after the restart: the
// documented at-least-once window. Duplicates are counted, not failed;
// losses and damaged messages are.
func TestCrashDuplicatesWithUpstreamUp(t *testing.T) {
	const cycles, clients, perClient = 3, 4, 100
	w := newWorld(t)
	w.holdPorts(t)
	w.startSink(t)
	l := crashCycles(t, w, cycles, clients, perClient)
	if len(l.acked) == 0 {
		t.Fatal("no message was acknowledged")
	}

	w.startServe(t)
	waitDelivered(t, w, l)
	r := checkDelivered(t, w, l)
	dups := logDuplicates(t, r)
	checkAllArrived(t, w, l, r)
	checkSpoolClean(t, w)
	t.Logf("submitted %d, acknowledged %d, delivered %d, unacknowledged-but-delivered %d, duplicated %d",
		len(l.tried), len(l.acked), len(r.delivered), r.unacked, dups)
}

// logDuplicates logs each message the sink received more than once (the
// at-least-once window) and returns how many there were.
func logDuplicates(t *testing.T, r crashReport) int {
	t.Helper()
	dups := 0
	for marker, n := range r.delivered {
		if n > 1 {
			dups++
			t.Logf("%s delivered %d times", marker, n)
		}
	}
	return dups
}

// checkAllArrived fails the test for every acknowledged message the sink
// never received, saying where each one is.
func checkAllArrived(t *testing.T, w *world, l *ledger, r crashReport) {
	t.Helper()
	var missing []string
	for marker := range l.acked {
		if r.delivered[marker] == 0 {
			missing = append(missing, marker)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Errorf("%d acknowledged messages never delivered: %v", len(missing), missing)
		locateMissing(t, w, l, missing)
	}
}

// locateMissing says, for each acknowledged message that never arrived,
// where it is: a file anywhere under the spool (any state, temporary files
// included) or at the sink, or nowhere (lost). With $OUTBOX_TEST_KEEP set
// it also copies the world there for inspection.
func locateMissing(t *testing.T, w *world, l *ledger, missing []string) {
	t.Helper()
	where := map[string][]string{}
	filepath.WalkDir(w.dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(w.dir, p)
		for _, m := range missing {
			if strings.Contains(string(b), "X-Marker: "+m+"\r\n") {
				where[m] = append(where[m], rel)
			}
		}
		return nil
	})
	for _, m := range missing {
		place := "nowhere under the spool or at the sink: lost, or delivered to another server (see the daemon's log)"
		if len(where[m]) > 0 {
			place = strings.Join(where[m], ", ")
		}
		t.Errorf("%s (acknowledged with %q) is %s", m, l.acked[m], place)
	}
	if keep := os.Getenv("OUTBOX_TEST_KEEP"); keep != "" {
		dst := filepath.Join(keep, fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano()))
		if out, err := exec.Command("cp", "-a", w.dir, dst).CombinedOutput(); err != nil {
			t.Logf("keeping the world: %v\n%s", err, out)
		} else {
			t.Logf("world kept in %s", dst)
		}
	}
}
