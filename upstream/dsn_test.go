package upstream

import (
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

func TestDSNPassedOn(t *testing.T) {
	m := func() *Message {
		return &Message{
			From: "a@example.org", Body: strings.NewReader("x\r\n"),
			Recipients: []string{"one@example.net", "two@example.net", "three@example.net", "four@example.net"},
			DSNRet:     "hdrs", EnvID: "QQ314159 +x",
			DSN: []RecipientDSN{
				{Notify: "SUCCESS,FAILURE", Orcpt: "rfc822;alias@example.org"},
				{Notify: "NEVER"},
				{Orcpt: "utf-8;ü@example.org"},
				{Notify: "NEVER,SUCCESS", Orcpt: "x400;bogus"}, // invalid: dropped
			},
		}
	}
	t.Run("offered", func(t *testing.T) {
		be := &backend{}
		host, port := startServer(t, be, serverOpts{dsn: true})
		c := New(testCfg(host, port, "none"), "client.test", nil)
		res, err := deliver(t, c, m())
		if err != nil || len(res) != 4 || res[3].Status != Delivered {
			t.Fatalf("Deliver = %+v, %v", res, err)
		}
		txns, _, _, _ := be.snapshot()
		o := txns[0].opts
		if o.Return != smtp.DSNReturnHeaders || o.EnvelopeID != "QQ314159 +x" {
			t.Errorf("server saw RET=%q ENVID=%q", o.Return, o.EnvelopeID)
		}
		want := []string{
			"[SUCCESS FAILURE] RFC822;alias@example.org",
			"[NEVER] ;",
			"[] UTF-8;ü@example.org",
			"[] ;",
		}
		for i, ro := range txns[0].rcptOpts {
			if got := fmt.Sprintf("%v %s;%s", ro.Notify, ro.OriginalRecipientType, ro.OriginalRecipient); got != want[i] {
				t.Errorf("recipient %d: server saw %s, want %s", i, got, want[i])
			}
		}
	})
	t.Run("not offered", func(t *testing.T) {
		be := &backend{}
		host, port := startServer(t, be, serverOpts{})
		c := New(testCfg(host, port, "none"), "client.test", nil)
		res, err := deliver(t, c, m())
		if err != nil || len(res) != 4 || res[0].Status != Delivered {
			t.Fatalf("Deliver = %+v, %v; want delivered without the DSN parameters", res, err)
		}
	})
}

func TestParseNotify(t *testing.T) {
	for in, want := range map[string]string{
		"SUCCESS":               "[SUCCESS]",
		"success,delay,failure": "[SUCCESS DELAY FAILURE]",
		"NEVER":                 "[NEVER]",
		"NEVER,FAILURE":         "[]",
		"SUCCESS,SUCCESS":       "[]",
		"SOMETIMES":             "[]",
		"":                      "[]",
	} {
		if got := fmt.Sprint(parseNotify(in)); got != want {
			t.Errorf("parseNotify(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestSizeLimit: a message larger than the upstream's SIZE fails for good,
// naming both sizes, before MAIL; the connection stays usable.
func TestSizeLimit(t *testing.T) {
	be := &backend{}
	host, port := startServer(t, be, serverOpts{maxSize: 1000})
	c := New(reuseCfg(host, port), "client.test", nil)
	defer c.Close()
	big := msg(0)
	big.Size = 1001
	_, err := deliver(t, c, big)
	e := asError(t, err)
	if e.Temporary || e.Op != "mail" || e.Enhanced != "5.3.4" || !strings.Contains(e.Text, "1001 bytes") || !strings.Contains(e.Text, "1000 bytes") {
		t.Errorf("error = %+v, want permanent 5.3.4 naming 1001 and 1000 bytes", e)
	}
	ok := msg(1)
	ok.Size = 1000
	mustDeliver(t, c, ok)
	if _, mails, _, _ := be.snapshot(); mails != 1 {
		t.Errorf("server saw %d MAIL, want only the one that fits", mails)
	}
	wantConns(t, be, 1)
}
