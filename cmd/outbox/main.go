// Command outbox is Outbox's one binary: the daemon (outbox serve), the queue
// tools (outbox queue, mailq) and the sendmail command. What it does depends
// on the name it is invoked as: sendmail, mailq and newaliases behave as
// their Postfix namesakes; any other name takes a subcommand.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/outboxmta/outbox/config"
	"github.com/outboxmta/outbox/internal/logging"
	"github.com/outboxmta/outbox/sendmail"
)

const usage = `usage: outbox COMMAND [--config FILE] [ARGS]

commands:
  serve [--trace]        run the daemon: listeners and queue runner; --trace logs the SMTP dialogue with the upstreams
  sendmail ARGS...       the sendmail command (also when invoked as sendmail)
  queue list [--failed]  list queued and held mail (also: mailq), or failed/
  queue show ID          print a message's envelope and content
  queue flush [ID...]    deliver now, whatever the schedule (also: sendmail -q)
  queue hold ID...       stop delivery until released
  queue release ID...    put held mail back in the queue
  queue delete ID...     remove mail without delivering it
  queue requeue ID...    retry now, also mail from failed/ or exported/
  queue export (--all | ID...) --to FILE   write queued mail to an air-gap bundle
  queue import FILE      queue the mail of a bundle (once), write its .ack
  queue ack FILE         delete the exported mail an acknowledgement names
  check [--send-test ADDRESS]
                         validate the configuration, test each upstream
                         (TLS, certificates, AUTH; see check --help)
  check-config           same as check --config-only
  oauth2 authorize NAME  get upstream NAME's OAuth2 refresh token (device code flow;
                         --flow=authcode [--port PORT]: browser redirect, Google's default)
  version                print the version

The configuration is --config FILE, else $OUTBOX_CONFIG, else ` + config.DefaultPath + `.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// env is what a command needs from the process, so tests can run commands
// in-process with their own streams.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

func main() {
	e := env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	os.Exit(run(context.Background(), os.Args, e))
}

func run(ctx context.Context, args []string, e env) int {
	switch filepath.Base(args[0]) {
	case "sendmail":
		return sendmailMain(ctx, args[1:], e)
	case "mailq":
		return mailqMain(args[1:], e)
	case "newaliases":
		fmt.Fprintln(e.stderr, "newaliases: Outbox reads aliases from the [aliases] table of its configuration; nothing to do")
		return 0
	}
	if len(args) < 2 {
		fmt.Fprint(e.stderr, usage)
		return sendmail.ExUsage
	}
	cmd, rest := args[1], args[2:]
	switch cmd {
	case "serve":
		return exitCode(e, "serve", serveMain(ctx, rest, e))
	case "sendmail":
		return sendmailMain(ctx, rest, e)
	case "mailq":
		return mailqMain(rest, e)
	case "queue":
		return exitCode(e, "queue", queueMain(ctx, rest, e))
	case "check":
		return checkMain(ctx, rest, e)
	case "oauth2":
		return exitCode(e, "oauth2", oauth2Main(ctx, rest, e))
	case "check-config":
		return checkMain(ctx, append([]string{"--config-only"}, rest...), e)
	case "version", "--version":
		fmt.Fprintln(e.stdout, "outbox", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(e.stdout, usage)
		return 0
	}
	fmt.Fprintf(e.stderr, "outbox: unknown command %q\n%s", cmd, usage)
	return sendmail.ExUsage
}

// usageError is a mistake on the command line: exit status 64.
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

// configError is a configuration that cannot be used: exit status 78.
type configError struct{ err error }

func (c configError) Error() string { return c.err.Error() }
func (c configError) Unwrap() error { return c.err }

// exitCode prints err, if any, and maps it to a sysexits.h status.
func exitCode(e env, cmd string, err error) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(e.stderr, "outbox %s: %v\n", cmd, err)
	var ue usageError
	var ce configError
	var de dataError
	switch {
	case errors.As(err, &ue), errors.Is(err, flag.ErrHelp):
		return sendmail.ExUsage
	case errors.As(err, &de):
		return sendmail.ExDataErr
	case errors.As(err, &ce):
		return sendmail.ExConfig
	}
	return 1
}

// flags returns a flag set that has --config, as every subcommand does.
func flags(name string, e env) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("outbox "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	path := fs.String("config", "", "configuration `file` (default $OUTBOX_CONFIG or "+config.DefaultPath+")")
	return fs, path
}

// parse parses args, allowing flags after positional arguments too
// ("outbox queue show ID --json").
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func loadConfig(flagPath string, e env) (*config.Config, error) {
	cfg, err := config.Load(config.Resolve(flagPath, e.getenv))
	if err != nil {
		return nil, configError{err}
	}
	return cfg, nil
}

// newLogger logs to w at the configured level: text lines, or native
// journal entries when w is stderr and systemd connected it to the journal.
func newLogger(w io.Writer, level string) *slog.Logger {
	log, _ := newLevelLogger(w, level)
	return log
}

// newLevelLogger is newLogger with its level in a LevelVar, which the
// daemon sets again when it reloads its configuration.
func newLevelLogger(w io.Writer, level string) (*slog.Logger, *slog.LevelVar) {
	lv := new(slog.LevelVar)
	lv.Set(parseLevel(level))
	return slog.New(logging.New(w, lv)), lv
}

// parseLevel reads a [log] level; anything else is info.
func parseLevel(level string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		l = slog.LevelInfo
	}
	return l
}
