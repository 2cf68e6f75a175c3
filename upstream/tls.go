package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// TLS modes of config.Upstream.TLS.
const (
	tlsImplicit      = "implicit"
	tlsStartTLS      = "starttls"
	tlsOpportunistic = "opportunistic"
	tlsNone          = "none"
)

// tlsConfig builds the client TLS configuration. It reads ca_file on every
// connection so that a replaced CA bundle takes effect without a restart.
func (c *Client) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{
		ServerName:         c.serverName(),
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: c.cfg.InsecureSkipVerify,
	}
	if c.cfg.CAFile != "" {
		pem, err := os.ReadFile(c.cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificates found", c.cfg.CAFile)
		}
		// ca_file replaces the system roots: it is meant for a private CA,
		// and trusting the whole web PKI besides would defeat pinning it.
		cfg.RootCAs = pool
	}
	return cfg, nil
}

func (c *Client) serverName() string {
	if c.cfg.TLSServerName != "" {
		return c.cfg.TLSServerName
	}
	return c.cfg.Host
}

// handshake runs the TLS client handshake on conn within timeout.
func handshake(ctx context.Context, conn net.Conn, cfg *tls.Config, timeout time.Duration) (*tls.Conn, error) {
	tc := tls.Client(conn, cfg)
	conn.SetDeadline(time.Now().Add(timeout))
	defer conn.SetDeadline(time.Time{})
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return tc, nil
}

// tlsErrorText explains a handshake failure; certificate problems get a hint
// because they are the common case and the admin's to fix.
func tlsErrorText(err error) string {
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) {
		return "certificate verification failed (fix the server certificate, ca_file or tls_server_name): " + cve.Err.Error()
	}
	return "TLS handshake failed: " + errText(err)
}

// tlsInfo describes an established TLS connection.
type tlsInfo struct {
	Version     string
	CipherSuite string
	PeerSubject string
	PeerIssuer  string
	Verified    bool   // the chain verified against the roots for ServerName
	VerifyError string // why not, when Verified is false

	// Chain is the certificates the server sent, leaf first.
	Chain []*x509.Certificate
}

// describeTLS reports on cs. When verification was skipped
// (insecure_skip_verify) it verifies anyway, only to report the result, so
// that `outbox check` can tell the admin what they are ignoring.
func describeTLS(cs tls.ConnectionState, cfg *tls.Config) tlsInfo {
	info := tlsInfo{
		Version:     tls.VersionName(cs.Version),
		CipherSuite: tls.CipherSuiteName(cs.CipherSuite),
		Chain:       cs.PeerCertificates,
	}
	if len(cs.PeerCertificates) == 0 {
		info.VerifyError = "no peer certificate"
		return info
	}
	leaf := cs.PeerCertificates[0]
	info.PeerSubject = leaf.Subject.String()
	info.PeerIssuer = leaf.Issuer.String()
	if len(cs.VerifiedChains) > 0 {
		info.Verified = true
		return info
	}
	opts := x509.VerifyOptions{
		DNSName:       cfg.ServerName,
		Roots:         cfg.RootCAs,
		Intermediates: x509.NewCertPool(),
	}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(opts); err != nil {
		info.VerifyError = err.Error()
	} else {
		info.Verified = true
	}
	return info
}
