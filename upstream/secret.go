package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/outboxmta/outbox/config"
	"github.com/outboxmta/outbox/internal/secret"
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
		b, err := secret.ReadFile("password_file", u.PasswordFile)
		if err != nil {
			return "", err
		}
		// Editors and `echo secret > file` add a newline; it is never
		// part of the password.
		return strings.TrimRight(string(b), "\r\n"), nil
	case len(u.PasswordCommand) > 0:
		return runPasswordCommand(ctx, u.PasswordCommand)
	case u.PasswordCredential != "":
		return readCredential(u.PasswordCredential)
	}
	return "", errors.New("no password configured (set password, password_file, password_command or password_credential)")
}

// readCredential reads the systemd credential name (systemd.exec(5),
// "Credentials"): systemd decrypts it if need be and puts it, readable by
// the service only, in $CREDENTIALS_DIRECTORY for the life of the service.
func readCredential(name string) (string, error) {
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if dir == "" {
		return "", fmt.Errorf("password_credential %q: $CREDENTIALS_DIRECTORY is not set: outbox is not running as a systemd service with LoadCredential=%s:/path/to/secret (or LoadCredentialEncrypted=) in its unit; to test by hand: systemd-run -P -p LoadCredential=%s:/path/to/secret outbox check", name, name, name)
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return "", fmt.Errorf("password_credential %q: %w (does the unit have LoadCredential=%s:...?)", name, err, name)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
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
	case u.PasswordCredential != "":
		return fmt.Sprintf("systemd credential %q (password_credential)", u.PasswordCredential)
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
