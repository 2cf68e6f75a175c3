package upstream

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxmta/outbox/config"
)

// TestMain lets the test binary stand in for a password_command helper.
func TestMain(m *testing.M) {
	if mode := os.Getenv("OUTBOX_TEST_PASSWORD_HELPER"); mode != "" {
		switch mode {
		case "ok":
			fmt.Print("fr0m-command\r\nsecond line\n")
		case "fail":
			fmt.Fprint(os.Stderr, "vault is locked\n")
			os.Exit(3)
		case "empty":
		case "hang":
			time.Sleep(time.Minute)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func helper(t *testing.T, mode string) []string {
	t.Setenv("OUTBOX_TEST_PASSWORD_HELPER", mode)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{exe, "-test.run=^$"}
}

func TestPassword(t *testing.T) {
	dir := t.TempDir()
	writeMode := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	write := func(name, content string) string { return writeMode(name, content, 0o600) }
	passwordCommandTimeout = 2 * time.Second
	t.Cleanup(func() { passwordCommandTimeout = 30 * time.Second })

	tests := []struct {
		name    string
		u       config.Upstream
		helper  string
		want    string
		wantErr string
	}{
		{name: "inline", u: config.Upstream{Password: " as is "}, want: " as is "},
		{name: "file", u: config.Upstream{PasswordFile: write("lf", "filepw\n")}, want: "filepw"},
		{name: "file crlf", u: config.Upstream{PasswordFile: write("crlf", "filepw\r\n")}, want: "filepw"},
		{name: "file no newline", u: config.Upstream{PasswordFile: write("bare", "filepw")}, want: "filepw"},
		{name: "file missing", u: config.Upstream{PasswordFile: filepath.Join(dir, "missing")}, wantErr: "password_file"},
		{name: "file others can read", u: config.Upstream{PasswordFile: writeMode("open", "filepw\n", 0o644)}, wantErr: "password_file " + filepath.Join(dir, "open") + " is accessible to every user"},
		{name: "command", helper: "ok", want: "fr0m-command"},
		{name: "command fails", helper: "fail", wantErr: "vault is locked"},
		{name: "command prints nothing", helper: "empty", wantErr: "printed no password"},
		{name: "command hangs", helper: "hang", wantErr: "timed out"},
		{name: "command not found", u: config.Upstream{PasswordCommand: []string{"/nonexistent/helper"}}, wantErr: "/nonexistent/helper"},
		{name: "none", wantErr: "no password configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.helper != "" {
				tt.u.PasswordCommand = helper(t, tt.helper)
			}
			start := time.Now()
			got, err := password(context.Background(), tt.u)
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("password() = %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("password() = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestPasswordCredential(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "smtp"), []byte("cr3d\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	u := config.Upstream{PasswordCredential: "smtp"}

	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	if got, err := password(context.Background(), u); err != nil || got != "cr3d" {
		t.Errorf("password() = %q, %v; want the credential", got, err)
	}
	u.PasswordCredential = "other"
	if _, err := password(context.Background(), u); err == nil || !strings.Contains(err.Error(), "LoadCredential=other:") {
		t.Errorf("missing credential: %v, want an error naming LoadCredential=other:", err)
	}

	t.Setenv("CREDENTIALS_DIRECTORY", "")
	u.PasswordCredential = "smtp"
	_, err := password(context.Background(), u)
	if err == nil || !strings.Contains(err.Error(), "$CREDENTIALS_DIRECTORY is not set") || !strings.Contains(err.Error(), "LoadCredential=smtp:") {
		t.Errorf("without credentials: %v, want an error saying how to run with them", err)
	}
}
