package upstream

import "context"

// ProbeResult is what Probe learned about the upstream.
type ProbeResult struct {
	Address string // the address connected to ("ip:port"), "" if none

	TLS         bool   // the session was encrypted
	TLSVersion  string // "TLS 1.3"
	CipherSuite string // "TLS_AES_128_GCM_SHA256"
	PeerSubject string // subject of the server's leaf certificate
	PeerIssuer  string // its issuer
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
// details when AUTH failed).
func (c *Client) Probe(ctx context.Context) (ProbeResult, error) {
	s := &session{capture: &ehloCapture{}}
	err := c.open(ctx, s)
	if err == nil {
		s.close()
	}
	var res ProbeResult
	if s.raw != nil {
		res.Address = s.raw.RemoteAddr().String()
	}
	if t := s.tls; t != nil {
		res.TLS = true
		res.TLSVersion, res.CipherSuite = t.Version, t.CipherSuite
		res.PeerSubject, res.PeerIssuer = t.PeerSubject, t.PeerIssuer
		res.Verified, res.VerifyError = t.Verified, t.VerifyError
	}
	res.Extensions = s.capture.ext
	res.AuthMechanism = s.mech
	if err != nil {
		return res, err
	}
	return res, nil
}
