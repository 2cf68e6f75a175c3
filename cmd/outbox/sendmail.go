package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/outboxmta/outbox/config"
	"github.com/outboxmta/outbox/listener"
	"github.com/outboxmta/outbox/sendmail"
	"github.com/outboxmta/outbox/spool"
)

// sendmailMain is the sendmail command. It hands the message to the running
// daemon over its unix socket, where the daemon learns the caller's uid from
// the socket itself; when the daemon is not running it drops the message
// into the spool's incoming/ directory, which the daemon takes in when it
// starts. Exit status 0 means one of the two made the message durable.
func sendmailMain(ctx context.Context, args []string, e env) int {
	opts, warnings, err := sendmail.ParseArgs(args)
	for _, w := range warnings {
		fmt.Fprintln(e.stderr, w)
	}
	if err != nil {
		return sendmailExit(e, err)
	}
	cfg, err := config.Load(config.Resolve(opts.ConfigFile, e.getenv))
	if err != nil {
		return sendmailExit(e, &sendmail.ExitError{Code: sendmail.ExConfig, Msg: "sendmail: " + err.Error()})
	}
	switch opts.Mode {
	case sendmail.ModeList:
		return mailqMain([]string{"--config", cfg.Path}, e)
	case sendmail.ModeNewaliases:
		return run(ctx, []string{"newaliases"}, e)
	case sendmail.ModeVersion:
		fmt.Fprintln(e.stdout, "outbox", version)
		return 0
	case sendmail.ModeFlush:
		return exitCode(e, "sendmail -q", queueMain(ctx, []string{"flush", "--config", cfg.Path}, e))
	case sendmail.ModeSMTP:
		return sendmailExit(e, &sendmail.ExitError{Code: sendmail.ExUnavailable,
			Msg: "sendmail: -bs is not supported yet"})
	}

	msg, err := sendmail.ReadMessage(e.stdin, opts.IgnoreDots, int64(cfg.MaxMessageSize))
	if err != nil {
		return sendmailExit(e, err)
	}
	uid := os.Getuid()
	prep, err := sendmail.Prepare(msg, sendmail.Params{
		Sender: opts.Sender, SenderSet: opts.SenderSet, FullName: opts.FullName,
		LoginName: loginName(uid), Domain: cfg.Domain, Hostname: cfg.Hostname, Now: time.Now(),
		ExtractRecipients: opts.ExtractRecipients, ArgRecipients: opts.Recipients,
	})
	if err != nil {
		return sendmailExit(e, err)
	}
	if int64(len(prep.Message)) > int64(cfg.MaxMessageSize) {
		return sendmailExit(e, &sendmail.ExitError{Code: sendmail.ExDataErr,
			Msg: fmt.Sprintf("sendmail: message too large (limit %d bytes)", int64(cfg.MaxMessageSize))})
	}
	sub := submission{prep: prep, opts: opts}
	err = sub.viaDaemon(ctx, cfg)
	if errors.Is(err, errDaemonDown) {
		if derr := sub.drop(cfg, uid); errors.Is(derr, spool.ErrNoSpace) {
			err = spoolFull(cfg.Spool.Dir, derr.Error()+"; the daemon (outbox serve) is not running either")
		} else if derr != nil {
			err = &sendmail.ExitError{Code: sendmail.ExTempFail, Msg: fmt.Sprintf(
				"sendmail: cannot queue the message: %v, and %v; start the daemon (outbox serve) or check the spool's permissions", err, derr)}
		} else {
			err = nil
		}
	}
	return sendmailExit(e, err)
}

// loginName is the caller's login name, from the password database rather
// than the environment, which the caller controls.
func loginName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

func sendmailExit(e env, err error) int {
	if err == nil {
		return 0
	}
	var ee *sendmail.ExitError
	if !errors.As(err, &ee) {
		ee = &sendmail.ExitError{Code: sendmail.ExTempFail, Msg: "sendmail: " + err.Error()}
	}
	fmt.Fprintln(e.stderr, ee.Msg)
	return ee.Code
}

// errDaemonDown means nothing listens on the submission socket.
var errDaemonDown = errors.New("daemon not running")

type submission struct {
	prep *sendmail.Prepared
	opts *sendmail.Options
}

// viaDaemon submits over the daemon's socket with SMTP. The daemon answers
// 250 only once the message is durable in the spool.
func (s submission) viaDaemon(ctx context.Context, cfg *config.Config) error {
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "unix", cfg.Sendmail.Socket)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", errDaemonDown, cfg.Sendmail.Socket, err)
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	c.CommandTimeout = time.Minute
	c.SubmissionTimeout = 5 * time.Minute
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	if err := c.Hello(cfg.Hostname); err != nil {
		return smtpExit("greeting", err)
	}
	mo := &smtp.MailOptions{UTF8: s.prep.UTF8, Return: smtp.DSNReturn(s.opts.DSNReturn), EnvelopeID: s.opts.EnvID}
	if s.prep.EightBit || s.opts.BodyType == "8BITMIME" {
		mo.Body = smtp.Body8BitMIME
	}
	if err := c.Mail(s.prep.From, mo); err != nil {
		return smtpExit("sender <"+s.prep.From+">", err)
	}
	var ro *smtp.RcptOptions
	if s.opts.DSNNotify != "" {
		ro = &smtp.RcptOptions{}
		for _, n := range strings.FieldsFunc(s.opts.DSNNotify, func(r rune) bool { return r == ',' }) {
			ro.Notify = append(ro.Notify, smtp.DSNNotify(n))
		}
	}
	for _, r := range s.prep.Recipients {
		if err := c.Rcpt(r, ro); err != nil {
			return smtpExit("recipient <"+r+">", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return smtpExit("data", err)
	}
	if _, err := w.Write(s.prep.Message); err != nil {
		return smtpExit("data", err)
	}
	if _, err := w.CloseWithResponse(); err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) && *se == *listener.ErrSpoolFull {
			return spoolFull(cfg.Spool.Dir, fmt.Sprintf("the daemon answered %d %d.%d.%d %s",
				se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message))
		}
		return smtpExit("data", err)
	}
	c.Quit()
	return nil
}

// smtpExit maps the daemon's refusal to a sysexits status: 4xx and broken
// connections are temporary, a refused recipient is EX_NOUSER, a refused
// message EX_DATAERR, anything else EX_UNAVAILABLE.
func smtpExit(what string, err error) error {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return &sendmail.ExitError{Code: sendmail.ExTempFail, Msg: fmt.Sprintf("sendmail: %s: lost the daemon: %v", what, err)}
	}
	code := sendmail.ExUnavailable
	switch {
	case se.Temporary():
		code = sendmail.ExTempFail
	case what == "data":
		code = sendmail.ExDataErr
	case strings.HasPrefix(what, "recipient"):
		code = sendmail.ExNoUser
	}
	return &sendmail.ExitError{Code: code, Msg: fmt.Sprintf("sendmail: %s: %d %s", what, se.Code, se.Message)}
}

// spoolFull reports a spool whose disk is full, or below its min_free
// reserve: temporary for the caller, but only an administrator can fix it,
// so the message says where.
func spoolFull(dir, detail string) error {
	return &sendmail.ExitError{Code: sendmail.ExTempFail, Msg: fmt.Sprintf(
		"sendmail: cannot queue the message: the disk holding the mail spool %s is full (%s); free space there, then send again", dir, detail)}
}

// drop writes the message into incoming/ for the daemon to take in later.
// It never creates the spool: that is the daemon's and the package's job.
func (s submission) drop(cfg *config.Config, uid int) error {
	if _, err := os.Stat(filepath.Join(cfg.Spool.Dir, string(spool.Incoming))); err != nil {
		return fmt.Errorf("no spool to drop into: %v", err)
	}
	sp, err := spool.Open(cfg.Spool.Dir, nil)
	if err != nil {
		return err
	}
	sp.SetMinFree(int64(cfg.Spool.MinFree))
	w, err := sp.Create(spool.Incoming)
	if err != nil {
		return err
	}
	now := time.Now()
	if _, err := w.Write([]byte(listener.LocalReceived(cfg.Hostname, uid, w.ID(), now))); err != nil {
		w.Abort()
		return err
	}
	if _, err := w.Write(s.prep.Message); err != nil {
		w.Abort()
		return err
	}
	env := &spool.Envelope{
		From: s.prep.From, Arrived: now,
		Origin:   spool.Origin{Kind: "maildrop", UID: &uid, User: loginName(uid)},
		EightBit: s.prep.EightBit || s.opts.BodyType == "8BITMIME", UTF8: s.prep.UTF8,
		DSNRet: s.opts.DSNReturn, EnvID: s.opts.EnvID,
	}
	// The daemon expands aliases for mail it receives; here it is ours to do.
	al := aliases(cfg)
	for _, r := range s.prep.Recipients {
		for _, t := range al.Expand(r) {
			env.Recipients = append(env.Recipients, spool.Recipient{Addr: t, Status: spool.Pending, DSNNotify: s.opts.DSNNotify})
		}
	}
	return w.Commit(env)
}
