// Package sendmail is the logic behind Outbox's sendmail(1) command:
// parsing the Postfix-compatible command line, reading the message from
// standard input, and completing its header the way Postfix does (missing
// From:, Date:, Message-ID:, recipient extraction for -t). It performs no
// spool or network I/O; the caller hands the result to the spool.
//
// Every error meant for the user is an *ExitError carrying the sysexits.h
// status the command should exit with, so scripts and cron see the same
// codes as with Postfix.
package sendmail
