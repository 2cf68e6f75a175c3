package airgap

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/outboxmta/outbox/internal/secret"
)

// ErrRefused marks a bundle or acknowledgement that is damaged, truncated,
// of an unknown format, or not signed by a trusted key: nothing was
// changed because of it. The command line maps it to exit status 65
// (EX_DATAERR).
var ErrRefused = errors.New("refused")

func refused(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// Keys are the [airgap] keys: Signer signs the bundles and
// acknowledgements this host writes; Trusted, when not empty, are the only
// keys whose bundles and acknowledgements this host accepts.
type Keys struct {
	Signer  ed25519.PrivateKey
	Trusted []ed25519.PublicKey
}

// LoadKeys reads the signing key file (PEM PKCS #8, as written by
// `openssl genpkey -algorithm ed25519`; "" for none) and the trusted keys,
// each either a public key in base64 (32 bytes) or the absolute path of a
// file holding one in PEM (`openssl pkey -pubout`) or base64.
func LoadKeys(signingKeyFile string, trusted []string) (*Keys, error) {
	k := &Keys{}
	if signingKeyFile != "" {
		b, err := secret.ReadFile("signing_key_file", signingKeyFile)
		if err != nil {
			return nil, fmt.Errorf("airgap: %w", err)
		}
		if k.Signer, err = parsePrivateKey(b); err != nil {
			return nil, fmt.Errorf("airgap: signing key %s: %w", signingKeyFile, err)
		}
	}
	for _, t := range trusted {
		// A key in base64 may itself begin with '/' (one in 64 do), so
		// the key is tried before the path.
		if pub, err := parsePublicKey([]byte(t)); err == nil {
			k.Trusted = append(k.Trusted, pub)
			continue
		}
		if !strings.HasPrefix(t, "/") {
			return nil, fmt.Errorf("airgap: trusted key %q: neither the base64 of a 32-byte ed25519 public key nor an absolute path", t)
		}
		src, err := os.ReadFile(t)
		if err != nil {
			return nil, fmt.Errorf("airgap: trusted key: %w", err)
		}
		pub, err := parsePublicKey(src)
		if err != nil {
			return nil, fmt.Errorf("airgap: trusted key %s: %w", t, err)
		}
		k.Trusted = append(k.Trusted, pub)
	}
	return k, nil
}

func parsePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New(`not a PEM "PRIVATE KEY" (make one with: openssl genpkey -algorithm ed25519)`)
	}
	key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	pk, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T, not an ed25519 key", key)
	}
	return pk, nil
}

// parsePublicKey reads an ed25519 public key: PEM "PUBLIC KEY" (PKIX) or
// the base64 of its 32 bytes.
func parsePublicKey(b []byte) (ed25519.PublicKey, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		key, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, err
		}
		pub, ok := key.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("a %T, not an ed25519 key", key)
		}
		return pub, nil
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, errors.New("neither PEM nor the base64 of a 32-byte ed25519 public key")
	}
	return ed25519.PublicKey(raw), nil
}

// KeyString is how a public key is written in seals, logs and trusted_keys.
func KeyString(pub ed25519.PublicKey) string { return base64.StdEncoding.EncodeToString(pub) }

// A seal is the last line of a bundle or acknowledgement:
//
//	MAGIC-END sha256=HEX[ ed25519=KEY sig=SIG]\n
//
// sha256 covers every byte before the line; the signature, if any, is over
// "MAGIC-END sha256=HEX" (the domain prefix keeps a bundle's signature from
// passing for an acknowledgement's).
type seal struct {
	sum []byte
	key ed25519.PublicKey // nil when unsigned
	sig []byte
}

// maxSeal bounds the seal line: it is searched for in the file's tail.
const maxSeal = 512

func signedText(magic string, sum []byte) []byte {
	return fmt.Appendf(nil, "%s-END sha256=%s", magic, hex.EncodeToString(sum))
}

// sealLine returns the seal line for content whose SHA-256 is sum.
func (k *Keys) sealLine(magic string, sum []byte) []byte {
	line := signedText(magic, sum)
	if k != nil && k.Signer != nil {
		sig := ed25519.Sign(k.Signer, line)
		line = fmt.Appendf(line, " ed25519=%s sig=%s", KeyString(k.Signer.Public().(ed25519.PublicKey)),
			base64.StdEncoding.EncodeToString(sig))
	}
	return append(line, '\n')
}

// readSeal finds and parses the seal at the end of f (size bytes) and
// returns it with the offset where it starts.
func readSeal(f io.ReaderAt, size int64, magic string) (*seal, int64, error) {
	n := min(size, maxSeal)
	tail := make([]byte, n)
	if _, err := f.ReadAt(tail, size-n); err != nil {
		return nil, 0, fmt.Errorf("read: %w", err)
	}
	i := bytes.LastIndex(tail, []byte(magic+"-END "))
	if i < 0 || tail[n-1] != '\n' || bytes.IndexByte(tail[i:], '\n') != len(tail[i:])-1 {
		return nil, 0, refused("no %s-END line at the end: the file is truncated or not a %s", magic, what(magic))
	}
	s := &seal{}
	fields := strings.Fields(string(tail[i+len(magic)+5 : n-1]))
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		var err error
		switch k {
		case "sha256":
			s.sum, err = hex.DecodeString(v)
		case "ed25519":
			var raw []byte
			raw, err = base64.StdEncoding.DecodeString(v)
			s.key = raw
		case "sig":
			s.sig, err = base64.StdEncoding.DecodeString(v)
		}
		if err != nil {
			return nil, 0, refused("damaged %s-END line", magic)
		}
	}
	if len(s.sum) != 32 || (s.key != nil) != (s.sig != nil) || (s.key != nil && len(s.key) != ed25519.PublicKeySize) {
		return nil, 0, refused("damaged %s-END line", magic)
	}
	return s, size - n + int64(i), nil
}

func what(magic string) string {
	if magic == ackMagic {
		return "acknowledgement"
	}
	return "bundle"
}

// trust applies the signature policy to a seal before anything else is
// read: with trusted keys, the seal must name one of them. An unsigned
// seal is fine without trusted keys.
func (k *Keys) trust(s *seal, magic string) error {
	if k == nil || len(k.Trusted) == 0 {
		return nil
	}
	if s.key == nil {
		return refused("the %s is not signed, and trusted_keys requires a signature", what(magic))
	}
	for _, t := range k.Trusted {
		if t.Equal(s.key) {
			return nil
		}
	}
	return refused("the %s is signed by %s, which is not in trusted_keys", what(magic), KeyString(s.key))
}

// verify checks the content's SHA-256 sum against the seal, and its
// signature if it has one.
func (s *seal) verify(magic string, sum []byte) error {
	if !bytes.Equal(sum, s.sum) {
		return refused("SHA-256 mismatch: the %s was changed or damaged", what(magic))
	}
	if s.key != nil && !ed25519.Verify(s.key, signedText(magic, sum), s.sig) {
		return refused("bad signature: the %s was changed after it was signed", what(magic))
	}
	return nil
}
