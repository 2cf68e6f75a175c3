package main

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outboxmta/outbox/airgap"
	"github.com/outboxmta/outbox/spool"
)

// keyPair writes an ed25519 key pair as openssl would: NAME.key (PEM PKCS
// #8, mode 0600) and NAME.pub (PEM PKIX). It returns their paths.
func keyPair(t *testing.T, dir, name string) (key, pub string) {
	t.Helper()
	pk, sk, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	p8, _ := x509.MarshalPKCS8PrivateKey(sk)
	pkix, _ := x509.MarshalPKIXPublicKey(pk)
	key, pub = filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pub")
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}), 0o644); err != nil {
		t.Fatal(err)
	}
	return key, pub
}

func exitStatus(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// airgapWorlds returns an isolated relay, whose upstream is never there,
// and a connected one delivering to its sink, each with its own signing
// key and trusting the other's.
func airgapWorlds(t *testing.T) (iso, con *world) {
	t.Helper()
	iso, con = newWorld(t), newWorld(t)
	iso.edit(t, `hostname = "relay.test"`, `hostname = "iso.test"`)
	// One attempt at arrival, then quiet: the export needs the records
	// unlocked.
	iso.edit(t, `retry_min = "1s"`, `retry_min = "1h"`)
	iso.edit(t, `retry_max = "2s"`, `retry_max = "2h"`)
	con.edit(t, `hostname = "relay.test"`, `hostname = "con.test"`)
	keys := t.TempDir()
	isoKey, isoPub := keyPair(t, keys, "iso")
	conKey, conPub := keyPair(t, keys, "con")
	iso.smConfig(t, "", fmt.Sprintf("\n[airgap]\nsigning_key_file = %q\ntrusted_keys = [%q]\n", isoKey, conPub))
	con.smConfig(t, "", fmt.Sprintf("\n[airgap]\nsigning_key_file = %q\ntrusted_keys = [%q]\n", conKey, isoPub))
	return iso, con
}

// dropFile puts a file into dir the way a careful link does: written
// under a dot name, then renamed.
func dropFile(dir, name string, data []byte) {
	tmp := filepath.Join(dir, "."+name+".part")
	os.WriteFile(tmp, data, 0o644)
	os.Rename(tmp, filepath.Join(dir, name))
}

// refusedFor waits for name to be refused from dir (moved to refused/ with
// a .reason file) and checks the reason.
func refusedFor(t *testing.T, dir, name, want string) {
	t.Helper()
	// The .reason file is created, then written: wait for its text.
	var reason []byte
	waitFor(t, name+" in refused/ with its reason", func() bool {
		reason, _ = os.ReadFile(filepath.Join(dir, "refused", name+".reason"))
		return len(reason) > 0
	})
	if !strings.Contains(string(reason), want) {
		t.Errorf("%s refused for %q, want %q", name, reason, want)
	}
}

func TestAirgapExportImportAck(t *testing.T) {
	iso, con := airgapWorlds(t)
	con.startSink(t)
	iso.startServe(t)
	con.startServe(t)

	for i := range 3 {
		iso.smtpSend(t, "app@example.com", []string{fmt.Sprintf("user%d@example.net", i)},
			fmt.Sprintf("Subject: across\r\nX-Marker: gap-%d\r\n\r\nover the air gap\r\n", i))
	}
	waitFor(t, "the isolated relay's first attempts", func() bool {
		q := iso.queue(t)
		for _, m := range q {
			if m.Attempts < 1 {
				return false
			}
		}
		return len(q) == 3
	})

	dir := t.TempDir()
	bundle := filepath.Join(dir, "b1.bundle")
	if out, err := iso.outbox(t, "queue", "export", "--all", "--to", bundle); err != nil || !strings.Contains(out, "exported 3 messages") {
		t.Fatalf("export: %v\n%s", err, out)
	}
	exported := map[string]bool{}
	for _, m := range iso.queue(t) {
		if m.State != "exported" {
			t.Errorf("after export %s is %s", m.ID, m.State)
		}
		exported[m.ID] = true
	}
	mq, _ := iso.outbox(t, "queue", "list")
	if strings.Count(mq, "@ ") != 3 {
		t.Errorf("queue list does not mark the exported mail with @:\n%s", mq)
	}

	good, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	// Refused, with nothing queued: one flipped byte, a truncated bundle,
	// and one signed by a key con does not trust.
	flipped, truncated, untrusted := filepath.Join(dir, "flipped.bundle"), filepath.Join(dir, "truncated.bundle"), filepath.Join(dir, "untrusted.bundle")
	b := []byte(string(good))
	b[len(b)/2] ^= 1
	os.WriteFile(flipped, b, 0o644)
	os.WriteFile(truncated, good[:len(good)*2/3], 0o644)
	strangerKey, _ := keyPair(t, t.TempDir(), "stranger")
	cfg, _ := os.ReadFile(iso.config)
	stranger := filepath.Join(t.TempDir(), "stranger.toml")
	os.WriteFile(stranger, regexp.MustCompile(`signing_key_file = ".*"`).ReplaceAll(cfg, fmt.Appendf(nil, "signing_key_file = %q", strangerKey)), 0o644)
	if out, err := exec.Command(filepath.Join(bin, "outbox"), "queue", "export", "--all", "--again", "--to", untrusted, "--config", stranger).CombinedOutput(); err != nil {
		t.Fatalf("export signed by another key: %v\n%s", err, out)
	}
	// Mail that arrives after the export is not the ack's business.
	iso.smtpSend(t, "app@example.com", []string{"late@example.net"}, "Subject: late\r\nX-Marker: late\r\n\r\nx\r\n")
	for file, why := range map[string]string{
		flipped:   "SHA-256 mismatch",
		truncated: "truncated",
		untrusted: "not in trusted_keys",
	} {
		out, err := con.outbox(t, "queue", "import", file)
		if exitStatus(err) != 65 || !strings.Contains(out, why) {
			t.Errorf("import %s: %v, want exit 65 and %q:\n%s", filepath.Base(file), err, why, out)
		}
		if q := con.queue(t); len(q) != 0 {
			t.Errorf("import %s queued %d messages", filepath.Base(file), len(q))
		}
	}

	out, err := con.outbox(t, "queue", "import", bundle)
	if err != nil || !strings.Contains(out, "3 queued") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	// Delivered promptly: the daemon hears of the import (its rescan would
	// take a minute).
	for i := range 3 {
		marker := fmt.Sprintf("X-Marker: gap-%d\r\n", i)
		waitFor(t, marker, func() bool { return con.count(t, marker) == 1 })
	}
	for _, m := range con.delivered(t) {
		if !strings.Contains(m, "X-Sink-Rcpt-To: <user") || !strings.Contains(m, "\r\n\r\nover the air gap\r\n") {
			t.Errorf("delivered message:\n%s", m)
		}
	}
	waitFor(t, "the connected queue to empty", func() bool { return len(con.queue(t)) == 0 })
	out, err = con.outbox(t, "queue", "import", bundle)
	if err != nil || !strings.Contains(out, "0 queued, 3 imported before") || len(con.queue(t)) != 0 {
		t.Fatalf("import again: %v\n%s", err, out)
	}

	out, err = iso.outbox(t, "queue", "ack", filepath.Join(dir, "b1.ack"))
	if err != nil || !strings.Contains(out, "3 messages deleted") {
		t.Fatalf("ack: %v\n%s", err, out)
	}
	q := iso.queue(t)
	if len(q) != 1 || exported[q[0].ID] || q[0].State != "queue" {
		t.Errorf("after the ack the isolated queue holds %+v, want only the late message", q)
	}
	for i := range 3 {
		if n := con.count(t, fmt.Sprintf("X-Marker: gap-%d\r\n", i)); n != 1 {
			t.Errorf("message %d delivered %d times", i, n)
		}
	}
}

// The one-way link: an isolated relay with no upstream at all exports into
// a directory, the connected relay picks the bundles up from it, delivers,
// and writes an acknowledgement for each into a return link, which the
// isolated relay applies; an acknowledgement signed by an untrusted key
// and a damaged bundle are moved to refused/ with their reasons, and a
// bundle dropped twice delivers nothing twice.
func TestAirgapDirectories(t *testing.T) {
	iso, con := airgapWorlds(t)
	b, _ := os.ReadFile(iso.config)
	cfg := regexp.MustCompile(`(?s)\[\[upstream\]\].*?tls = "none"\n`).ReplaceAll(b, nil)
	if strings.Contains(string(cfg), "[[upstream]]") {
		t.Fatal("the isolated relay still has an upstream")
	}
	os.WriteFile(iso.config, cfg, 0o644)
	diode, back := filepath.Join(t.TempDir(), "diode"), filepath.Join(t.TempDir(), "back")
	iso.smConfig(t, "", fmt.Sprintf("export_dir = %q\nexport_interval = \"1s\"\nimport_dir = %q\nimport_interval = \"1s\"\n", diode, back))
	con.smConfig(t, "", fmt.Sprintf("import_dir = %q\nimport_interval = \"1s\"\nack_dir = %q\n", diode, back))
	con.startSink(t)
	iso.startServe(t)

	for i := range 2 {
		iso.smtpSend(t, "app@example.com", []string{fmt.Sprintf("user%d@example.net", i)},
			fmt.Sprintf("Subject: by diode\r\nX-Marker: diode-%d\r\n\r\nthrough the diode\r\n", i))
	}
	var exported []string
	waitFor(t, "both messages in exported/", func() bool {
		exported = exported[:0]
		for _, e := range iso.queue(t) {
			if e.State == string(spool.Exported) {
				exported = append(exported, e.ID)
			}
		}
		return len(exported) == 2
	})
	// An acknowledgement of exactly those, well formed but signed by a
	// key the isolated relay does not trust, deletes nothing.
	strangerKey, _ := keyPair(t, t.TempDir(), "stranger")
	stranger, err := airgap.LoadKeys(strangerKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	forged := &airgap.Ack{Bundle: spool.NewID(time.Now()), Source: "iso.test", Importer: "con.test", Created: time.Now(), IDs: exported}
	tmp := filepath.Join(t.TempDir(), "forged.ack")
	if err := forged.Write(tmp, stranger); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(tmp)
	dropFile(back, "forged.ack", b)
	refusedFor(t, back, "forged.ack", "not in trusted_keys")
	if q := iso.queue(t); len(q) != 2 {
		t.Fatalf("after a forged acknowledgement the isolated relay holds %+v, want both messages", q)
	}

	con.startServe(t)
	for i := range 2 {
		marker := fmt.Sprintf("X-Marker: diode-%d\r\n", i)
		waitFor(t, marker+" at the connected relay's upstream", func() bool { return con.count(t, marker) == 1 })
	}
	// The acknowledgements come back and empty exported/.
	waitFor(t, "the isolated relay's queue to empty", func() bool { return len(iso.queue(t)) == 0 })
	done, _ := filepath.Glob(filepath.Join(diode, "done", "*.bundle"))
	acks, _ := filepath.Glob(filepath.Join(back, "done", "*.ack"))
	if len(done) == 0 || len(done) != len(acks) {
		t.Fatalf("done/ holds bundles %v and applied acks %v", done, acks)
	}
	// A damaged bundle and a second copy of a good one.
	good, _ := os.ReadFile(done[0])
	dropFile(diode, "broken.bundle", good[:len(good)-100])
	dropFile(diode, "again.bundle", good)
	refusedFor(t, diode, "broken.bundle", "truncated")
	waitFor(t, "the second copy's acknowledgement applied", func() bool {
		_, err := os.Stat(filepath.Join(back, "done", "again.ack"))
		return err == nil
	})
	if q := con.queue(t); len(q) != 0 {
		t.Errorf("the second copy queued %+v", q)
	}
	for i := range 2 {
		if n := con.count(t, fmt.Sprintf("X-Marker: diode-%d\r\n", i)); n != 1 {
			t.Errorf("message %d delivered %d times", i, n)
		}
	}
}
