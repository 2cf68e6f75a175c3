// Command benchtool does the parts of bench/run that shell tools do badly:
//
//	benchtool fsync DIR SECONDS          the disk's fsync rates, two patterns
//	benchtool fill SPOOL N [WRITERS]     N durable 4 KiB records in SPOOL/queue
//	benchtool tarpit ADDR                a TCP port that never answers
//	benchtool waitempty SECONDS DIR...   until DIRs (recursively) hold no file
//	benchtool count DIR...               files under DIRs
//	benchtool startup PATTERN CMD...     run CMD until a stderr line has PATTERN
//	benchtool repeat N STDIN CMD...      run CMD N times, stdin from a file
//
// Every result is printed as one line of key=value pairs for bench/run.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/outboxmta/outbox/spool"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: benchtool fsync|fill|tarpit|waitempty|count|startup|repeat ARGS")
	}
	args := os.Args[2:]
	var err error
	switch os.Args[1] {
	case "fsync":
		err = fsyncRate(arg(args, 0), seconds(arg(args, 1)))
	case "fill":
		err = fill(arg(args, 0), atoi(arg(args, 1)), atoiOr(args, 2, 16))
	case "tarpit":
		err = tarpit(arg(args, 0))
	case "waitempty":
		err = waitEmpty(seconds(arg(args, 0)), args[1:])
	case "count":
		fmt.Printf("files=%d\n", count(args))
	case "startup":
		err = startup(arg(args, 0), args[1:])
	case "repeat":
		err = repeat(atoi(arg(args, 0)), arg(args, 1), args[2:])
	default:
		fail("unknown subcommand " + os.Args[1])
	}
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "benchtool:", msg)
	os.Exit(1)
}

func arg(args []string, i int) string {
	if i >= len(args) {
		fail("missing argument")
	}
	return args[i]
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		fail(err.Error())
	}
	return n
}

func atoiOr(args []string, i, def int) int {
	if i >= len(args) {
		return def
	}
	return atoi(args[i])
}

func seconds(s string) time.Duration {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		fail(err.Error())
	}
	return time.Duration(f * float64(time.Second))
}

var block = bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"), 64) // 4 KiB

// fsyncRate measures, for d each, one writer's rate of (a) appending 4 KiB
// to one file and fdatasync, the best case of a journal, and (b) creating a
// file, writing 4 KiB, fsync, then fsync of the directory: what a durable
// spool record costs without group commit.
func fsyncRate(dir string, d time.Duration) error {
	dir, err := os.MkdirTemp(dir, "fsync-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	f, err := os.Create(filepath.Join(dir, "append"))
	if err != nil {
		return err
	}
	defer f.Close()
	appends := 0
	for start := time.Now(); time.Since(start) < d; appends++ {
		if _, err := f.Write(block); err != nil {
			return err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return err
		}
	}
	dirf, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer dirf.Close()
	files := 0
	for start := time.Now(); time.Since(start) < d; files++ {
		nf, err := os.Create(filepath.Join(dir, "f"+strconv.Itoa(files)))
		if err != nil {
			return err
		}
		_, err = nf.Write(block)
		if err == nil {
			err = nf.Sync()
		}
		nf.Close()
		if err == nil {
			err = dirf.Sync()
		}
		if err != nil {
			return err
		}
	}
	fmt.Printf("append_fdatasync_per_s=%.0f newfile_fsync_dirsync_per_s=%.0f\n",
		float64(appends)/d.Seconds(), float64(files)/d.Seconds())
	return nil
}

// fill writes n records to the spool's queue/ with writers concurrent
// writers, each made durable as the daemon does (group commit included).
func fill(root string, n, writers int) error {
	s, err := spool.Open(root, nil)
	if err != nil {
		return err
	}
	start := time.Now()
	jobs := make(chan int)
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for i := range jobs {
				env := &spool.Envelope{
					From:       "bench@source.test",
					Recipients: []spool.Recipient{{Addr: fmt.Sprintf("rcpt%d@sink.test", i), Status: spool.Pending}},
					Origin:     spool.Origin{Kind: "smtp", Client: "127.0.0.1:1"},
				}
				msg := fmt.Sprintf("From: bench@source.test\r\nTo: rcpt%d@sink.test\r\nSubject: bench %d\r\n\r\n", i, i)
				if err := s.Put(spool.Queue, env, io.MultiReader(strings.NewReader(msg), bytes.NewReader(block))); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	go func() {
		defer close(jobs)
		for i := range n {
			select {
			case jobs <- i:
			case err := <-errs:
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	el := time.Since(start)
	fmt.Printf("records=%d seconds=%.3f per_s=%.0f\n", n, el.Seconds(), float64(n)/el.Seconds())
	return nil
}

// tarpit listens on addr and never accepts: clients connect (the kernel
// completes the handshake into the backlog) and then wait for a greeting
// that never comes, so an MTA pointed here delivers nothing and does no
// per-message work while its queue fills.
func tarpit(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer l.Close()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}

// count returns how many regular files are under dirs.
func count(dirs []string) int {
	n := 0
	for _, d := range dirs {
		filepath.WalkDir(d, func(_ string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				n++
			}
			return nil
		})
	}
	return n
}

// waitEmpty waits until dirs hold no regular file, or fails after limit.
func waitEmpty(limit time.Duration, dirs []string) error {
	start := time.Now()
	for count(dirs) > 0 {
		if time.Since(start) > limit {
			return fmt.Errorf("%d files still in %s after %v", count(dirs), strings.Join(dirs, " "), limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Printf("seconds=%.3f\n", time.Since(start).Seconds())
	return nil
}

// startup runs cmd until a line of its standard error contains pattern,
// then reports how long that took and the process's resident memory, and
// ends it with SIGTERM.
func startup(pattern string, cmd []string) error {
	c := exec.Command(cmd[0], cmd[1:]...)
	stderr, err := c.StderrPipe()
	if err != nil {
		return err
	}
	start := time.Now()
	if err := c.Start(); err != nil {
		return err
	}
	defer func() {
		c.Process.Signal(syscall.SIGTERM)
		io.Copy(io.Discard, stderr)
		c.Wait()
	}()
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if strings.Contains(sc.Text(), pattern) {
			el := time.Since(start)
			rss, hwm := memory(c.Process.Pid)
			fmt.Printf("seconds=%.3f rss_kib=%d peak_rss_kib=%d\n", el.Seconds(), rss, hwm)
			return nil
		}
	}
	return fmt.Errorf("%s ended without logging %q", cmd[0], pattern)
}

// memory returns VmRSS and VmHWM of pid in KiB.
func memory(pid int) (rss, hwm int) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			rss, _ = strconv.Atoi(f[0])
		case "VmHWM":
			hwm, _ = strconv.Atoi(f[0])
		}
	}
	return rss, hwm
}

// repeat runs cmd n times, each with stdin from the file, and reports the
// median and 90th percentile of the whole-process wall time. A failed run
// ends it: a latency of failures means nothing.
func repeat(n int, stdin string, cmd []string) error {
	var times []time.Duration
	for range n {
		in, err := os.Open(stdin)
		if err != nil {
			return err
		}
		c := exec.Command(cmd[0], cmd[1:]...)
		c.Stdin = in
		var out bytes.Buffer
		c.Stdout, c.Stderr = &out, &out
		start := time.Now()
		err = c.Run()
		times = append(times, time.Since(start))
		in.Close()
		if err != nil {
			return fmt.Errorf("%s: %v\n%s", strings.Join(cmd, " "), err, out.Bytes())
		}
	}
	slices.Sort(times)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	fmt.Printf("runs=%d median_ms=%.2f p90_ms=%.2f\n", n, ms(times[n/2]), ms(times[n*9/10]))
	return nil
}
