package testutil

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// NeedTool returns the path of the program name. Without it the test is
// skipped, except in CI (CI=true), which must install it (.ci/run).
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed; CI must install it (.ci/run packages=…): %v", name, err)
		}
		t.Skipf("%s is not installed: %v", name, err)
	}
	return p
}

// UnitValues returns every value of key in section of the systemd unit
// file at path, in order (a small reader: no line continuations, no
// drop-ins).
func UnitValues(t testing.TB, path, section, key string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	cur := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			cur = strings.Trim(line, "[]")
		default:
			k, v, _ := strings.Cut(line, "=")
			if cur == section && strings.TrimSpace(k) == key {
				out = append(out, strings.TrimSpace(v))
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
