package upstream

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/outboxmta/outbox/internal/testutil"
)

// BenchmarkRelay measures messages per second relayed to an in-process
// server over STARTTLS with AUTH PLAIN, one message at a time: through a
// reused connection (the default) and on a fresh connection per message
// (max_messages_per_connection = 1). On loopback the difference is the
// setup's CPU cost (TLS handshake, EHLO twice, AUTH); over a real network
// each of its five or six round trips adds the latency on top.
//
//	go test ./upstream -run '^$' -bench Relay -benchtime 2s
func BenchmarkRelay(b *testing.B) {
	pki := testutil.NewPKI(b, "Bench CA")
	body := "Subject: bench\r\n\r\n" + strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqr\r\n", 60)
	for _, bc := range []struct {
		name        string
		maxMessages int
	}{
		{"reused", 100},
		{"fresh", 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			be := &backend{users: map[string]string{"app": "secret"}}
			host, port := startServer(b, be, serverOpts{tls: "starttls", pki: pki})
			cfg := testCfg(host, port, "starttls")
			cfg.CAFile, cfg.TLSServerName = pki.CAFile, "localhost"
			cfg.Auth, cfg.Username, cfg.Password = "auto", "app", "secret"
			cfg.IdleTimeout.Duration = time.Minute
			cfg.MaxMessagesPerConnection = bc.maxMessages
			c := New(cfg, "client.test", nil)
			defer c.Close()
			ctx := context.Background()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				res, err := c.Deliver(ctx, &Message{From: "a@example.org", Recipients: []string{"b@example.net"}, Body: strings.NewReader(body)})
				if err != nil || res[0].Status != Delivered {
					b.Fatalf("Deliver = %+v, %v", res, err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
