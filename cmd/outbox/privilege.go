package main

// The sendmail command may be installed set-group-ID, group outbox, like
// Postfix's postdrop, so that it can drop mail into the spool's incoming/
// directory while the daemon is down (the packaging modes are in
// docs/design.md). The group then must serve nothing but that drop:
//
//   - every other use of the binary (outbox queue, mailq, serve, sendmail -bp
//     or -q) gives the group up before it runs;
//   - the environment is cleared before anything reads it, and -C and
//     $OUTBOX_CONFIG are ignored: the configuration is maildropConfig only,
//     since a file of the caller's choosing could aim the spool anywhere the
//     group can write, or get a group-readable file (a password) quoted in
//     an error message;
//   - files are created with umask 0227, so a drop is mode 0440: readable
//     by the daemon's group, never writable, not readable by other users;
//   - the drop only creates one new record and reads none (sendmail.go),
//     so the caller can neither read nor alter anyone else's mail; the
//     daemon records the file's owner as the submitter (spool.Accept),
//     whatever the record claims.

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/outboxmta/outbox/config"
)

// maildropConfig is the only configuration file a set-group-ID sendmail
// reads. Packages that install it elsewhere set it at build time:
// -ldflags "-X main.maildropConfig=/usr/local/etc/outbox/outbox.toml".
var maildropConfig = config.DefaultPath

// maildropUmask makes a set-group-ID drop mode 0440 (the spool creates
// records 0640).
const maildropUmask = 0o227

// setgid reports whether the process runs with an effective group other
// than its real one: the binary is installed set-group-ID.
func setgid() bool { return syscall.Getgid() != syscall.Getegid() }

func init() {
	if !setgid() {
		return
	}
	if !submitting(os.Args) {
		if err := dropGroup(); err != nil {
			fmt.Fprintln(os.Stderr, "outbox:", err)
			os.Exit(71) // EX_OSERR
		}
		return
	}
	os.Clearenv()
	syscall.Umask(maildropUmask)
}

// submitting reports whether args run the sendmail command, the one use
// of the binary that keeps the set-group-ID group (sendmailMain gives it up
// for the modes that do not submit mail).
func submitting(args []string) bool {
	if len(args) == 0 {
		return false
	}
	return filepath.Base(args[0]) == "sendmail" || (len(args) > 1 && args[1] == "sendmail")
}

// dropGroup gives up the set-group-ID group for good: real, effective and
// saved group IDs all become the real one (on every thread: Go's
// syscall.Setresgid applies to the whole process).
func dropGroup() error {
	gid := syscall.Getgid()
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		return fmt.Errorf("cannot give up the set-group-ID group: %v", err)
	}
	return nil
}

// sendmailConfigPath chooses the sendmail command's configuration file:
// -C, else $OUTBOX_CONFIG, else the default; but only maildropConfig when
// privileged (set-group-ID), with a warning if -C was given.
func sendmailConfigPath(flagValue string, getenv func(string) string, privileged bool) (path, warning string) {
	if !privileged {
		return config.Resolve(flagValue, getenv), ""
	}
	if flagValue != "" && flagValue != maildropConfig {
		warning = fmt.Sprintf("sendmail: warning: ignoring -C %s: a set-group-ID sendmail reads only %s", flagValue, maildropConfig)
	}
	return maildropConfig, warning
}
