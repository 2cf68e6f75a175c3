// Command smtpsink is a small SMTP server that stores every message it
// accepts as a file, for tests and benchmarks that need a real upstream
// process to deliver to, stop and start again.
//
//	smtpsink -listen 127.0.0.1:2525 -dir /tmp/got [-data-reply "451 4.3.0 busy"] [-reject rcpt@x]
//	smtpsink -fd 3 -dir /tmp/got
//
// With -fd it serves the listening socket it inherited as that file
// descriptor instead of opening one: a test that holds the port for its
// whole run lends it to each sink it starts, so that no other process on
// the machine can take the port while no sink runs.
//
// Each message is written to DIR/NNNNNNNN.eml (atomically: a temporary file
// renamed into place) and starts with X-Sink-Mail-From: and one
// X-Sink-Rcpt-To: line per recipient, followed by the message as received.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/emersion/go-smtp"
)

type backend struct {
	dir       string
	n         atomic.Int64
	dataReply *smtp.SMTPError
	reject    map[string]bool
}

type session struct {
	b    *backend
	from string
	to   []string
}

func (b *backend) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{b: b}, nil }

func (s *session) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.b.reject[to] {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "X-Sink-Mail-From: <%s>\r\n", s.from)
	for _, t := range s.to {
		fmt.Fprintf(&buf, "X-Sink-Rcpt-To: <%s>\r\n", t)
	}
	if _, err := io.Copy(&buf, r); err != nil {
		return err
	}
	if s.b.dataReply != nil {
		return s.b.dataReply
	}
	n := s.b.n.Add(1)
	name := filepath.Join(s.b.dir, fmt.Sprintf("%08d-%d.eml", n, os.Getpid()))
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }

func parseReply(s string) (*smtp.SMTPError, error) {
	if s == "" {
		return nil, nil
	}
	f := strings.SplitN(s, " ", 3)
	if len(f) < 3 {
		return nil, errors.New("want CODE X.Y.Z TEXT")
	}
	code, err := strconv.Atoi(f[0])
	if err != nil {
		return nil, err
	}
	var ec smtp.EnhancedCode
	if _, err := fmt.Sscanf(f[1], "%d.%d.%d", &ec[0], &ec[1], &ec[2]); err != nil {
		return nil, err
	}
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: f[2]}, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:2525", "address to listen on")
	fd := flag.Int("fd", -1, "serve this inherited listening socket instead of -listen")
	dir := flag.String("dir", "", "directory to store messages in")
	dataReply := flag.String("data-reply", "", `answer every DATA with this instead of storing ("451 4.3.0 busy")`)
	reject := flag.String("reject", "", "comma-separated recipients to refuse with 550 5.1.1")
	flag.Parse()
	if *dir == "" {
		log.Fatal("smtpsink: -dir is required")
	}
	b := &backend{dir: *dir, reject: map[string]bool{}}
	var err error
	if b.dataReply, err = parseReply(*dataReply); err != nil {
		log.Fatalf("smtpsink: -data-reply: %v", err)
	}
	for _, r := range strings.Split(*reject, ",") {
		if r != "" {
			b.reject[r] = true
		}
	}
	s := smtp.NewServer(b)
	s.Addr = *listen
	s.Domain = "sink.test"
	s.AllowInsecureAuth = true
	s.EnableSMTPUTF8 = true
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
		<-c
		s.Close()
	}()
	if err := serve(s, *fd); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
		log.Fatal(err)
	}
}

func serve(s *smtp.Server, fd int) error {
	if fd < 0 {
		return s.ListenAndServe()
	}
	l, err := net.FileListener(os.NewFile(uintptr(fd), "inherited socket"))
	if err != nil {
		return fmt.Errorf("smtpsink: -fd %d: %w", fd, err)
	}
	return s.Serve(l)
}
