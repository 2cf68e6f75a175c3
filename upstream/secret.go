package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/outboxmta/outbox/config"
)

// passwordCommandTimeout bounds password_command: a helper waiting for a
// keyring unlock must not hold a delivery attempt forever. A variable so
// tests can shorten it.
var passwordCommandTimeout = 30 * time.Second

// maxStderr bounds how much of a failing password_command's stderr goes
// into the error (and so into logs and the queue).
const maxStderr = 512

// password returns the upstream password from, in order, password,
// password_file or password_command. Errors name the source but never
// contain the secret.
func password(ctx context.Context, u config.Upstream) (string, error) {
	switch {
	case u.Password != "":
		return u.Password, nil
	case u.PasswordFile != "":
		b, err := os.ReadFile(u.PasswordFile)
		if err != nil {
			// The *PathError names the file and the reason, nothing more.
			return "", fmt.Errorf("password_file: %w", err)
		}
		// Editors and `echo secret > file` add a newline; it is never
		// part of the password.
		return strings.TrimRight(string(b), "\r\n"), nil
	case len(u.PasswordCommand) > 0:
		return runPasswordCommand(ctx, u.PasswordCommand)
	}
	return "", errors.New("no password configured (set password, password_file or password_command)")
}

// secretSource names where the upstream's secret comes from, for messages
// that tell the administrator what to fix.
func secretSource(u config.Upstream) string {
	switch {
	case u.Password != "":
		return "password in the configuration file"
	case u.PasswordFile != "":
		return "password_file " + u.PasswordFile
	case len(u.PasswordCommand) > 0:
		return fmt.Sprintf("password_command %q", u.PasswordCommand[0])
	}
	return "the configuration"
}

// runPasswordCommand runs argv directly (no shell, so nothing in it is
// interpreted) and returns the first line of its output.
func runPasswordCommand(ctx context.Context, argv []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, passwordCommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	// A helper that leaves a child holding the pipes open must not keep us
	// waiting after it exits or is killed.
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("timed out after %v", passwordCommandTimeout)
		}
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > maxStderr {
			msg = msg[:maxStderr] + "..."
		}
		if msg != "" {
			return "", fmt.Errorf("password_command %q: %w: %s", argv[0], err, clean(msg))
		}
		return "", fmt.Errorf("password_command %q: %w", argv[0], err)
	}
	line, _, _ := strings.Cut(stdout.String(), "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", fmt.Errorf("password_command %q printed no password", argv[0])
	}
	return line, nil
}
