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
// the socket itself; when the daemon is not running (or hangs up before it
// has the whole message) it drops the message into the spool's incoming/
// directory, which the daemon takes in when it starts. Exit status 0 means
// one of the two made the message durable.
//
// Installed set-group-ID (see privilege.go), it reads only the default
// configuration and keeps its group only for submitting mail.
func sendmailMain(ctx context.Context, args []string, e env) int {
	opts, warnings, err := sendmail.ParseArgs(args)
	for _, w := range warnings {
		fmt.Fprintln(e.stderr, w)
	}
	if err != nil {
		return sendmailExit(e, err)
	}
	privileged := setgid()
	if privileged && opts.Mode != sendmail.ModeDeliver && opts.Mode != sendmail.ModeSMTP {
		// mailq, -q, -bi, -bV: nothing to drop, so no use for the group.
		if err := dropGroup(); err != nil {
			return sendmailExit(e, &sendmail.ExitError{Code: sendmail.ExSoftware, Msg: "sendmail: " + err.Error()})
		}
		privileged = false
	}
	path, warning := sendmailConfigPath(opts.ConfigFile, e.getenv, privileged)
	if warning != "" {
		fmt.Fprintln(e.stderr, warning)
	}
	cfg, err := config.Load(path)
	if err != nil {
		msg := "sendmail: " + err.Error()
		if privileged {
			// The file is not the caller's to read: its text (a password
			// in a mistyped value) stays out of the message.
			msg = fmt.Sprintf("sendmail: the configuration %s cannot be used; run outbox check as its administrator", path)
		}
		return sendmailExit(e, &sendmail.ExitError{Code: sendmail.ExConfig, Msg: msg})
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
		return sendmailSMTP(ctx, cfg, opts, e)
	}

	msg, err := sendmail.ReadMessage(e.stdin, opts.IgnoreDots, int64(cfg.MaxMessageSize))
	if err != nil {
		return sendmailExit(e, err)
	}
	prep, err := prepare(cfg, msg, sendmail.Params{
		Sender: opts.Sender, SenderSet: opts.SenderSet, FullName: opts.FullName,
		ExtractRecipients: opts.ExtractRecipients, ArgRecipients: opts.Recipients,
	})
	if err != nil {
		return sendmailExit(e, err)
	}
	return sendmailExit(e, submit(ctx, cfg, submission{prep: prep, opts: opts}))
}

// prepare completes a message read from the caller (Params as far as the
// caller's input goes) and checks its final size.
func prepare(cfg *config.Config, msg []byte, p sendmail.Params) (*sendmail.Prepared, error) {
	p.LoginName = loginName(os.Getuid())
	p.Domain, p.Hostname, p.Now = cfg.Domain, cfg.Hostname, time.Now()
	p.Masquerade, p.RewriteFrom = cfg.Masquerade.Sender, cfg.Masquerade.RewriteFrom
	prep, err := sendmail.Prepare(msg, p)
	if err != nil {
		return nil, err
	}
	if int64(len(prep.Message)) > int64(cfg.MaxMessageSize) {
		return nil, &sendmail.ExitError{Code: sendmail.ExDataErr,
			Msg: fmt.Sprintf("sendmail: message too large (limit %d bytes)", int64(cfg.MaxMessageSize))}
	}
	return prep, nil
}

// submit makes a prepared message durable: through the daemon, else by a
// drop into incoming/. Errors are *sendmail.ExitError.
func submit(ctx context.Context, cfg *config.Config, sub submission) error {
	err := sub.viaDaemon(ctx, cfg)
	if !errors.Is(err, errDaemonDown) {
		return err
	}
	derr := sub.drop(cfg, os.Getuid())
	switch {
	case derr == nil:
		return nil
	case errors.Is(derr, spool.ErrNoSpace):
		return spoolFull(cfg.Spool.Dir, derr.Error()+"; the daemon (outbox serve) is not taking mail either")
	}
	return &sendmail.ExitError{Code: sendmail.ExTempFail, Msg: fmt.Sprintf(
		"sendmail: cannot queue the message: %v, and %v; start the daemon (outbox serve) or check the spool's permissions", err, derr)}
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

// errDaemonDown means the daemon cannot have the message: nothing listens
// on the submission socket, or the daemon hung up (421, a closed
// connection, no greeting) before the message was complete. The message
// then goes to the drop.
var errDaemonDown = errors.New("daemon not available")

type submission struct {
	prep *sendmail.Prepared
	opts *sendmail.Options
	// notify is a DSN NOTIFY value per recipient (lower case), from -bs's
	// RCPT TO NOTIFY=; recipients not in it get opts.DSNNotify.
	notify map[string]string
}

func (s submission) dsnNotify(rcpt string) string {
	if n, ok := s.notify[strings.ToLower(rcpt)]; ok {
		return n
	}
	return s.opts.DSNNotify
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
		return beforeDot("greeting", err)
	}
	mo := &smtp.MailOptions{UTF8: s.prep.UTF8, Return: smtp.DSNReturn(s.opts.DSNReturn), EnvelopeID: s.opts.EnvID}
	if s.prep.EightBit || s.opts.BodyType == "8BITMIME" {
		mo.Body = smtp.Body8BitMIME
	}
	if err := c.Mail(s.prep.From, mo); err != nil {
		return beforeDot("sender <"+s.prep.From+">", err)
	}
	for _, r := range s.prep.Recipients {
		var ro *smtp.RcptOptions
		if n := s.dsnNotify(r); n != "" {
			ro = &smtp.RcptOptions{}
			for _, n := range strings.FieldsFunc(n, func(r rune) bool { return r == ',' }) {
				ro.Notify = append(ro.Notify, smtp.DSNNotify(n))
			}
		}
		if err := c.Rcpt(r, ro); err != nil {
			return beforeDot("recipient <"+r+">", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return beforeDot("data", err)
	}
	if _, err := w.Write(s.prep.Message); err != nil {
		return beforeDot("data", err)
	}
	if _, err := w.CloseWithResponse(); err != nil {
		var se *smtp.SMTPError
		switch {
		case !errors.As(err, &se):
			// No reply to the end of the message (the connection broke,
			// or the final write failed; go-smtp does not say which): the
			// daemon may have queued it. Dropping it as well could
			// deliver it twice. A duplicate would be better than a loss,
			// but the caller can choose: exit 75 (temporary failure,
			// "try again") is the sendmail contract that cron, PHP and
			// mail clients know, and they report or retry it. So no drop.
			return &sendmail.ExitError{Code: sendmail.ExTempFail, Msg: fmt.Sprintf(
				"sendmail: lost the daemon before it confirmed the message, which it may or may not have queued: %v", err)}
		case se.Code == 421:
			// A reply, so a definite refusal: nothing was queued.
			return beforeDot("data", err)
		case *se == *listener.ErrSpoolFull:
			return spoolFull(cfg.Spool.Dir, fmt.Sprintf("the daemon answered %d %d.%d.%d %s",
				se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message))
		}
		return smtpExit("data", err)
	}
	c.Quit()
	return nil
}

// beforeDot maps an error met before the end of the message was sent. A
// 421 (the daemon is shutting down or busy) or a broken connection means
// the daemon cannot have queued it, so the caller falls back to the drop,
// as when the daemon is not running at all; any other reply is the
// daemon's verdict on the message.
func beforeDot(what string, err error) error {
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code == 421 {
		return fmt.Errorf("%w: %s: %v", errDaemonDown, what, err)
	}
	return smtpExit(what, err)
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
// It only ever creates one new record and reads none, which is what makes
// it safe to run set-group-ID (privilege.go).
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
			env.Recipients = append(env.Recipients, spool.Recipient{Addr: t, Status: spool.Pending, DSNNotify: s.dsnNotify(r)})
		}
	}
	return w.Commit(env)
}
