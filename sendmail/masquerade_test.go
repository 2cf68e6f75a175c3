package sendmail

import "testing"

func TestPrepareMasquerade(t *testing.T) {
	const noreply = "noreply@example.com"
	masq := func(mod func(*Params)) Params {
		return params(func(p *Params) {
			p.Masquerade, p.RewriteFrom, p.ArgRecipients = noreply, true, []string{"b@x"}
			if mod != nil {
				mod(p)
			}
		})
	}
	tests := []struct {
		name string
		msg  string
		p    Params
		want string
		from string
	}{
		{
			name: "From: rewritten, display name kept, original in Reply-To:",
			msg:  "From: Alice Example <alice@example.org>\nTo: b@x\nSubject: s\n\nbody\n",
			p:    masq(nil),
			want: "From: Alice Example <noreply@example.com>\nTo: b@x\nSubject: s\n" + testDate +
				"Message-ID: <ID>\nReply-To: Alice Example <alice@example.org>\n\nbody\n",
			from: noreply,
		},
		{
			name: "-f is replaced too",
			msg:  "From: app@example.net\nTo: b@x\n\nbody\n",
			p:    masq(func(p *Params) { p.Sender, p.SenderSet = "bounces@example.net", true }),
			want: "From: noreply@example.com\nTo: b@x\n" + testDate + "Message-ID: <ID>\nReply-To: app@example.net\n\nbody\n",
			from: noreply,
		},
		{
			name: "existing Reply-To: kept, none added",
			msg:  "Reply-To: support@example.net\nFROM: \"Doe, Jane\" <jane@example.net>\nTo: b@x\n\nbody\n",
			p:    masq(nil),
			want: "Reply-To: support@example.net\nFROM: \"Doe, Jane\" <noreply@example.com>\nTo: b@x\n" + testDate + "Message-ID: <ID>\n\nbody\n",
			from: noreply,
		},
		{
			name: "bare name with a display name that net/mail refuses",
			msg:  "From: Cron Daemon <root>\nTo: b@x\n\nbody\n",
			p:    masq(nil),
			want: "From: Cron Daemon <noreply@example.com>\nTo: b@x\n" + testDate + "Message-ID: <ID>\nReply-To: Cron Daemon <root@example.org>\n\nbody\n",
			from: noreply,
		},
		{
			name: "encoded display name stays encoded",
			msg:  "From: =?utf-8?q?Jos=C3=A9?= <jose@example.org>\nTo: b@x\n\nbody\n",
			p:    masq(nil),
			want: "From: =?utf-8?q?Jos=C3=A9?= <noreply@example.com>\nTo: b@x\n" + testDate + "Message-ID: <ID>\nReply-To: =?utf-8?q?Jos=C3=A9?= <jose@example.org>\n\nbody\n",
			from: noreply,
		},
		{
			name: "added From: shows the masquerade, the login address goes to Reply-To:",
			msg:  "Subject: cron\n\nbody\n",
			p:    masq(func(p *Params) { p.FullName = "Cron" }),
			want: "Subject: cron\nFrom: Cron <noreply@example.com>\n" + testDate + "Message-ID: <ID>\nTo: undisclosed-recipients:;\n" +
				"Reply-To: Cron <alice@example.org>\n\nbody\n",
			from: noreply,
		},
		{
			name: "From: already the masquerade address: no Reply-To:",
			msg:  "From: No Reply <NoReply@Example.com>\nTo: b@x\n\nbody\n",
			p:    masq(nil),
			want: "From: No Reply <noreply@example.com>\nTo: b@x\n" + testDate + "Message-ID: <ID>\n\nbody\n",
			from: noreply,
		},
		{
			name: "unparsable From: still rewritten, no Reply-To:",
			msg:  "From: <<<\nTo: b@x\n\nbody\n",
			p:    masq(nil),
			want: "From: noreply@example.com\nTo: b@x\n" + testDate + "Message-ID: <ID>\n\nbody\n",
			from: noreply,
		},
		{
			name: "folded From: replaced whole",
			msg:  "From: Alice\n <alice@example.org>\nTo: b@x\n\nbody\n",
			p:    masq(nil),
			want: "From: Alice <noreply@example.com>\nTo: b@x\n" + testDate + "Message-ID: <ID>\nReply-To: Alice <alice@example.org>\n\nbody\n",
			from: noreply,
		},
		{
			name: "rewrite_from = false: envelope only",
			msg:  "From: Alice <alice@example.org>\nTo: b@x\n\nbody\n",
			p:    masq(func(p *Params) { p.RewriteFrom = false }),
			want: "From: Alice <alice@example.org>\nTo: b@x\n" + testDate + "Message-ID: <ID>\n\nbody\n",
			from: noreply,
		},
		{
			name: "rewrite_from = false: an added From: shows the real sender",
			msg:  "To: b@x\n\nbody\n",
			p:    masq(func(p *Params) { p.RewriteFrom = false }),
			want: "To: b@x\nFrom: alice@example.org\n" + testDate + "Message-ID: <ID>\n\nbody\n",
			from: noreply,
		},
		{
			name: "the null sender stays null",
			msg:  "From: Vacation <alice@example.org>\nTo: b@x\n\nbody\n",
			p:    masq(func(p *Params) { p.Sender, p.SenderSet = "", true }),
			want: "From: Vacation <noreply@example.com>\nTo: b@x\n" + testDate + "Message-ID: <ID>\nReply-To: Vacation <alice@example.org>\n\nbody\n",
			from: "",
		},
		{
			name: "resent: Resent-From: rewritten, From: and Reply-To: left alone",
			msg:  "From: orig@x\nTo: b@x\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <o@x>\nResent-From: alice@example.org\nResent-To: b@x\n\nbody\n",
			p:    masq(nil),
			want: "From: orig@x\nTo: b@x\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <o@x>\nResent-From: noreply@example.com\nResent-To: b@x\n" +
				"Resent-" + testDate + "Resent-Message-ID: <ID>\n\nbody\n",
			from: noreply,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pr, err := Prepare([]byte(crlfs(tt.msg)), tt.p)
			if err != nil {
				t.Fatal(err)
			}
			want := crlfs(tt.want)
			if got := redactID(string(pr.Message)); got != want {
				t.Errorf("message:\n got %q\nwant %q", got, want)
			}
			if pr.From != tt.from {
				t.Errorf("From = %q, want %q", pr.From, tt.from)
			}
		})
	}
}
