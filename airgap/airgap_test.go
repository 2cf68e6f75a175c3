package airgap

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outboxmta/outbox/internal/testutil"
	"github.com/outboxmta/outbox/spool"
)

func openSpool(t testing.TB) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

func queue(t testing.TB, sp *spool.Spool, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		env := &spool.Envelope{From: "app@iso.test", Origin: spool.Origin{Kind: "smtp"},
			Recipients: []spool.Recipient{{Addr: fmt.Sprintf("r%d@example.net", i), Status: spool.Pending}}}
		body := fmt.Sprintf("Subject: %d\r\nX-Marker: m%d\r\n\r\n%s\r\n", i, i, strings.Repeat("x", 1000))
		if err := sp.Put(spool.Queue, env, strings.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, env.ID)
	}
	return ids
}

func ids(t testing.TB, sp *spool.Spool, st spool.State) []string {
	t.Helper()
	got, err := sp.IDs(st)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	return got
}

func export(t testing.TB, sp *spool.Spool, o Options) string {
	t.Helper()
	sel, err := Select(sp, false)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "b.bundle")
	if _, err := Export(context.Background(), sp, sel, file, o); err != nil {
		t.Fatal(err)
	}
	return file
}

func newKeys(t testing.TB) (*Keys, ed25519.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &Keys{Signer: priv}, pub
}

func TestExportImportAck(t *testing.T) {
	iso, con := openSpool(t), openSpool(t)
	sent := queue(t, iso, 3)
	isoKeys, isoPub := newKeys(t)
	conKeys, conPub := newKeys(t)
	isoKeys.Trusted, conKeys.Trusted = []ed25519.PublicKey{conPub}, []ed25519.PublicKey{isoPub}
	isoOpts := Options{Host: "iso.test", Keys: isoKeys}
	conOpts := Options{Host: "con.test", Keys: conKeys, Keep: time.Hour}

	file := export(t, iso, isoOpts)
	if got := ids(t, iso, spool.Exported); !slices.Equal(got, sent) || len(ids(t, iso, spool.Queue)) != 0 {
		t.Fatalf("after export: exported/ %v, want %v; queue/ %v", got, sent, ids(t, iso, spool.Queue))
	}
	res, err := Import(context.Background(), con, file, conOpts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Queued != 3 || res.Duplicates != 0 || !res.Signed || res.Source != "iso.test" {
		t.Errorf("import: %+v", res)
	}
	for i, id := range ids(t, con, spool.Queue) {
		env, body, err := con.Read(spool.Queue, id)
		if err != nil {
			t.Fatal(err)
		}
		if env.Imported == nil || env.Imported.ID != sent[i] || env.Imported.Source != "iso.test" ||
			!strings.Contains(string(body), fmt.Sprintf("X-Marker: m%d\r\n", i)) || len(env.Pending()) != 1 {
			t.Errorf("imported %s: %+v", id, env)
		}
	}

	// The same bundle again queues nothing and acknowledges everything.
	again, err := Import(context.Background(), con, file, conOpts)
	if err != nil || again.Queued != 0 || again.Duplicates != 3 {
		t.Fatalf("second import: %+v, %v", again, err)
	}
	if n := len(ids(t, con, spool.Queue)); n != 3 {
		t.Errorf("queue holds %d after importing twice, want 3", n)
	}

	// The acknowledgement deletes exactly the exported messages.
	later := queue(t, iso, 1)
	ackFile := filepath.Join(t.TempDir(), "b.ack")
	if err := AckFor(again, "con.test", time.Now()).Write(ackFile, conKeys); err != nil {
		t.Fatal(err)
	}
	ack, err := ReadAck(ackFile, isoKeys)
	if err != nil {
		t.Fatal(err)
	}
	removed, err := ack.Apply(iso, "iso.test")
	if err != nil || !slices.Equal(removed, sent) {
		t.Fatalf("ack removed %v, %v; want %v", removed, err, sent)
	}
	if got := ids(t, iso, spool.Queue); !slices.Equal(got, later) || len(ids(t, iso, spool.Exported)) != 0 {
		t.Errorf("after ack: queue %v (want %v), exported %v", got, later, ids(t, iso, spool.Exported))
	}
	// An ack for another host's bundle deletes nothing.
	if _, err := ack.Apply(iso, "other.test"); !errors.Is(err, ErrRefused) {
		t.Errorf("ack on the wrong host: %v", err)
	}
	// A tampered ack is refused.
	b, _ := os.ReadFile(ackFile)
	os.WriteFile(ackFile, []byte(strings.Replace(string(b), "id "+sent[0], "id "+later[0], 1)), 0o640)
	if _, err := ReadAck(ackFile, isoKeys); !errors.Is(err, ErrRefused) {
		t.Errorf("tampered ack: %v", err)
	}
}

// Every damaged bundle is refused and queues nothing: each byte flipped in
// turn (sampled) and every length cut short.
func TestDamagedBundlesAreRefused(t *testing.T) {
	iso, con := openSpool(t), openSpool(t)
	queue(t, iso, 3)
	file := export(t, iso, Options{Host: "iso.test"})
	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad")
	try := func(what string, b []byte) {
		t.Helper()
		if err := os.WriteFile(bad, b, 0o640); err != nil {
			t.Fatal(err)
		}
		_, err := Import(context.Background(), con, bad, Options{Host: "con.test", Keep: time.Hour})
		if !errors.Is(err, ErrRefused) {
			t.Fatalf("%s: %v, want refused", what, err)
		}
		if q := ids(t, con, spool.Queue); len(q) != 0 {
			t.Fatalf("%s: %d messages queued", what, len(q))
		}
		if entries, _ := os.ReadDir(filepath.Join(con.Root(), "queue")); len(entries) != 0 {
			t.Fatalf("%s: left %d files in queue/", what, len(entries))
		}
	}
	for i := 0; i < len(good); i += 1 + i/50 {
		b := slices.Clone(good)
		b[i] ^= 0x20
		try(fmt.Sprintf("byte %d flipped", i), b)
	}
	for n := 0; n < len(good); n += 1 + n/20 {
		try(fmt.Sprintf("cut to %d bytes", n), good[:n])
	}
	try("cut by one byte", good[:len(good)-1])
	if _, err := Import(context.Background(), con, file, Options{Host: "con.test", Keep: time.Hour}); err != nil {
		t.Fatalf("the undamaged bundle: %v", err)
	}
}

func TestTrustPolicy(t *testing.T) {
	iso, con := openSpool(t), openSpool(t)
	queue(t, iso, 2)
	signer, _ := newKeys(t)
	_, trusted := newKeys(t)
	con2 := Options{Host: "con.test", Keep: time.Hour, Keys: &Keys{Trusted: []ed25519.PublicKey{trusted}}}
	for name, o := range map[string]Options{
		"unsigned":  {Host: "iso.test"},
		"untrusted": {Host: "iso.test", Keys: signer},
	} {
		queue(t, iso, 1)
		file := export(t, iso, o)
		_, err := Import(context.Background(), con, file, con2)
		if !errors.Is(err, ErrRefused) || len(ids(t, con, spool.Queue)) != 0 {
			t.Errorf("%s bundle: %v, queue %v", name, err, ids(t, con, spool.Queue))
		}
	}
}

// Reading keys as openssl writes them, and refusing a signing key others
// can read.
func TestLoadKeys(t *testing.T) {
	dir := t.TempDir()
	pub, priv, _ := ed25519.GenerateKey(nil)
	p8, _ := x509.MarshalPKCS8PrivateKey(priv)
	pk, _ := x509.MarshalPKIXPublicKey(pub)
	keyFile, pubFile := filepath.Join(dir, "key.pem"), filepath.Join(dir, "pub.pem")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600)
	os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pk}), 0o644)
	k, err := LoadKeys(keyFile, []string{pubFile, KeyString(pub)})
	if err != nil {
		t.Fatal(err)
	}
	if !k.Signer.Equal(priv) || len(k.Trusted) != 2 || !k.Trusted[0].Equal(pub) || !k.Trusted[1].Equal(pub) {
		t.Errorf("keys %+v", k)
	}
	os.Chmod(keyFile, 0o644)
	if _, err := LoadKeys(keyFile, nil); err == nil || !strings.Contains(err.Error(), "accessible to every user") {
		t.Errorf("world-readable signing key: %v", err)
	}
	if _, err := LoadKeys("", []string{"bm90IGEga2V5"}); err == nil {
		t.Error("a bad trusted key was accepted")
	}
	// A key whose base64 begins with '/' is a key, not a path.
	slash := make(ed25519.PublicKey, ed25519.PublicKeySize)
	slash[0] = 0xfc
	if k, err := LoadKeys("", []string{KeyString(slash)}); err != nil || len(k.Trusted) != 1 || !k.Trusted[0].Equal(slash) {
		t.Errorf("LoadKeys(%q) = %+v, %v", KeyString(slash), k, err)
	}
}

// Keys made as the README says, with openssl, sign and verify.
func TestOpenSSLKeys(t *testing.T) {
	openssl := testutil.NeedTool(t, "openssl")
	dir := t.TempDir()
	key, pub := filepath.Join(dir, "airgap.key"), filepath.Join(dir, "airgap.pub")
	for _, args := range [][]string{
		{"genpkey", "-algorithm", "ed25519", "-out", key},
		{"pkey", "-in", key, "-pubout", "-out", pub},
	} {
		if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	os.Chmod(key, 0o600)
	k, err := LoadKeys(key, []string{pub})
	if err != nil {
		t.Fatal(err)
	}
	iso, con := openSpool(t), openSpool(t)
	queue(t, iso, 1)
	if _, err := Import(context.Background(), con, export(t, iso, Options{Host: "iso.test", Keys: k}), Options{Host: "con.test", Keys: k}); err != nil {
		t.Fatal(err)
	}
}

// Ordinary tools read a bundle: tar lists its entries.
func TestBundleIsATarArchive(t *testing.T) {
	tar := testutil.NeedTool(t, "tar")
	sp := openSpool(t)
	sent := queue(t, sp, 2)
	out, err := exec.Command(tar, "tf", export(t, sp, Options{Host: "iso.test"})).CombinedOutput()
	if err != nil {
		t.Fatalf("tar tf: %v\n%s", err, out)
	}
	want := "bundle.json\nmessages/" + sent[0] + "\nmessages/" + sent[1] + "\nmanifest.jsonl\n"
	if string(out) != want {
		t.Errorf("tar tf:\n%s\nwant:\n%s", out, want)
	}
}

func TestJournalPrunesAndWatchSeesImports(t *testing.T) {
	iso, con := openSpool(t), openSpool(t)
	queue(t, iso, 2)
	file := export(t, iso, Options{Host: "iso.test"})
	tl := WatchImports(con.Root())
	res, err := Import(context.Background(), con, file, Options{Host: "con.test", Keep: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	tl.Poll(func(id string) { seen = append(seen, id) })
	if !slices.Equal(seen, res.IDs) {
		t.Errorf("watch saw %v, want %v", seen, res.IDs)
	}
	// Past the retention the journal forgets: the bundle queues again.
	later := Options{Host: "con.test", Keep: time.Hour, Now: func() time.Time { return time.Now().Add(2 * time.Hour) }}
	res2, err := Import(context.Background(), con, file, later)
	if err != nil || res2.Queued != 2 {
		t.Fatalf("import after the retention: %+v, %v", res2, err)
	}
	// The journal was rewritten: the watcher follows the new file.
	seen = nil
	tl.Poll(func(id string) { seen = append(seen, id) })
	if !slices.Equal(seen, res2.IDs) {
		t.Errorf("after the rewrite, watch saw %v, want %v", seen, res2.IDs)
	}
}

// An export interrupted by a crash leaves its temporary file: the next
// export to that name says so, writes nothing and leaves the queue as it
// was; once it is removed, the export goes through.
func TestExportAfterInterruptedExport(t *testing.T) {
	sp := openSpool(t)
	queued := queue(t, sp, 2)
	file := filepath.Join(t.TempDir(), "b.bundle")
	part := filepath.Join(filepath.Dir(file), ".b.bundle.part")
	testutil.WriteFile(t, part, []byte("half a bundle"), 0o640)
	_, err := Export(context.Background(), sp, queued, file, Options{Host: "iso.test"})
	if err == nil || !strings.Contains(err.Error(), part) || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("export over a stale %s: %v", part, err)
	}
	if _, err := os.Lstat(file); err == nil {
		t.Error("the bundle was written")
	}
	if got := ids(t, sp, spool.Queue); !slices.Equal(got, queued) {
		t.Errorf("queue %v after a refused export, want %v", got, queued)
	}
	os.Remove(part)
	if res, err := Export(context.Background(), sp, queued, file, Options{Host: "iso.test"}); err != nil || res.Messages != 2 {
		t.Errorf("export after removing the stale file: %+v, %v", res, err)
	}
}
