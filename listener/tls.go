package listener

import (
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/emersion/go-smtp"
)

// TLSMode is how an endpoint offers TLS: the listener's `tls` key.
type TLSMode string

const (
	TLSNone     TLSMode = "none"     // plain SMTP (also the zero value)
	TLSStartTLS TLSMode = "starttls" // advertise STARTTLS (port 25/587 style)
	TLSImplicit TLSMode = "implicit" // TLS from the first byte (port 465 style)
)

func (m TLSMode) on() bool { return m == TLSStartTLS || m == TLSImplicit }

// LoadCertificate reads a PEM certificate chain and its private key. Errors
// name the file at fault, so that an admin can tell which one to fix.
func LoadCertificate(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	if !hasPEM(certPEM, "CERTIFICATE") {
		return nil, fmt.Errorf("TLS certificate %s: no PEM \"CERTIFICATE\" block found", certFile)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS key: %w", err)
	}
	if !hasPEM(keyPEM, "PRIVATE KEY") {
		return nil, fmt.Errorf("TLS key %s: no PEM private key block found", keyFile)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return &cert, nil
}

// hasPEM reports whether b holds a PEM block whose type ends in suffix
// ("PRIVATE KEY" matches RSA, EC and PKCS#8 keys).
func hasPEM(b []byte, suffix string) bool {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return false
		}
		if len(block.Type) >= len(suffix) && block.Type[len(block.Type)-len(suffix):] == suffix {
			return true
		}
	}
}

// tlsConfig is the configuration for the endpoint at addr. The certificate
// is looked up at each handshake, so Reconfigure can replace it (a renewed
// certificate) without a restart; initial is used if the endpoint no longer
// has one (its tls mode was switched off, which only a restart applies).
func (s *Server) tlsConfig(addr string, initial *tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := s.endpoint(addr).cert; c != nil {
				return c, nil
			}
			return initial, nil
		},
	}
}

// setupTLS makes srv offer TLS as ep asks: STARTTLS through go-smtp, or
// implicit TLS by wrapping the socket. It returns the listener to serve.
func (s *Server) setupTLS(srv *smtp.Server, l net.Listener, ep Endpoint) net.Listener {
	log := s.log.With("listener", ep.Address)
	if ep.Auth.on() && !ep.TLS.on() && !filepath.IsAbs(ep.Address) {
		log.Warn(`auth is set but tls is "none": AUTH is only offered over TLS, so no client can authenticate here`)
	}
	if !ep.TLS.on() {
		return l
	}
	if leaf := ep.cert.Leaf; leaf != nil && time.Now().After(leaf.NotAfter) {
		log.Warn("TLS certificate has expired", "cert_file", ep.CertFile, "not_after", leaf.NotAfter)
	}
	cfg := s.tlsConfig(ep.Address, ep.cert)
	if ep.TLS == TLSImplicit {
		// go-smtp completes the handshake in the connection's goroutine,
		// under the read timeout, before the greeting.
		return tls.NewListener(l, cfg)
	}
	srv.TLSConfig = cfg
	return l
}

// tlsVersion names a TLS version as Postfix and OpenSSL do: "TLSv1.3".
func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return tls.VersionName(v)
}

// tlsState returns the session's TLS state, if it runs over TLS.
func (s *session) tlsState() (tls.ConnectionState, bool) {
	return s.conn.TLSConnectionState()
}

// starttlsOffered reports whether the session could still turn on TLS.
func (s *session) starttlsOffered() bool {
	_, isTLS := s.tlsState()
	return !isTLS && s.conn.Server().TLSConfig != nil
}
