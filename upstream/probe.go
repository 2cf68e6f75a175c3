package upstream

import (
	"context"
	"crypto/x509"
	"errors"
)

// ProbeResult is what Probe learned about the upstream.
type ProbeResult struct {
	Address string // the address connected to ("ip:port"), "" if none

	TLS         bool   // the session was encrypted
	TLSVersion  string // "TLS 1.3"
	CipherSuite string // "TLS_AES_128_GCM_SHA256"
	PeerSubject string // subject of the server's leaf certificate
	PeerIssuer  string // its issuer
	// Chain is the certificate chain the server sent, leaf first. When the
	// handshake failed (a certificate Outbox does not trust), Probe fetches
	// it on a second connection that skips verification and sends nothing
	// after the handshake, so that the administrator sees what is wrong.
	Chain      []*x509.Certificate
	ServerName string // the name the certificate must match (tls_server_name)
	// Verified says whether the certificate chain verified for the
	// server name. With insecure_skip_verify the check is made anyway,
	// for this report only; VerifyError says why it failed.
	Verified    bool
	VerifyError string

	// Extensions advertised in the last EHLO reply (after STARTTLS), keyed
	// by upper-case keyword, with their parameters ("SIZE": "35882577").
	Extensions map[string]string

	// AuthMechanism is the SASL mechanism that succeeded, "" if none was
	// used.
	AuthMechanism string
}

// Probe connects, negotiates TLS and AUTH as Deliver would, and quits
// without sending mail; it is what `outbox check` runs. On error the result
// still holds what was learned before the failure (for example the TLS
// details when AUTH failed, or the certificate chain when it did not
// verify).
func (c *Client) Probe(ctx context.Context) (ProbeResult, error) {
	s := &session{capture: &ehloCapture{}}
	err := c.open(ctx, s)
	if err == nil {
		s.close()
	}
	res := ProbeResult{ServerName: c.serverName()}
	if s.raw != nil {
		res.Address = s.raw.RemoteAddr().String()
	}
	t := s.tls
	var ue *Error
	if t == nil && errors.As(err, &ue) && (ue.Op == "tls" || ue.Op == "starttls") {
		t = c.fetchChain(ctx)
	}
	if t != nil {
		res.TLS = s.tls != nil
		res.TLSVersion, res.CipherSuite = t.Version, t.CipherSuite
		res.PeerSubject, res.PeerIssuer = t.PeerSubject, t.PeerIssuer
		res.Verified, res.VerifyError = t.Verified, t.VerifyError
		res.Chain = t.Chain
	}
	res.Extensions = s.capture.ext
	res.AuthMechanism = s.mech
	return res, err
}

// fetchChain connects once more, without verifying the certificate, only
// to see the chain a failed handshake was about: it closes the connection
// right after the handshake and sends no credentials and no mail.
func (c *Client) fetchChain(ctx context.Context) *tlsInfo {
	s := &session{blind: true}
	if err := c.open(ctx, s); err != nil {
		return nil
	}
	s.close()
	return s.tls
}
