package spool

import (
	"log/slog"
	"time"
)

// RecipientStatus is where one recipient stands.
type RecipientStatus string

const (
	Pending   RecipientStatus = "pending"   // not yet delivered; retried
	Delivered RecipientStatus = "delivered" // accepted by the upstream
	Failed    RecipientStatus = "failed"    // refused permanently or expired
)

// Envelope is everything about a message except its content. It is stored as
// JSON; fields are only ever added, so older records stay readable.
type Envelope struct {
	ID         string      `json:"id"`
	From       string      `json:"from"` // reverse-path; "" is the null sender
	Recipients []Recipient `json:"recipients"`
	Size       int64       `json:"size"` // bytes of the message
	Arrived    time.Time   `json:"arrived"`
	Origin     Origin      `json:"origin"`

	EightBit bool   `json:"8bitmime,omitempty"` // BODY=8BITMIME
	UTF8     bool   `json:"smtputf8,omitempty"` // needs SMTPUTF8
	DSNRet   string `json:"dsn_ret,omitempty"`  // FULL or HDRS
	EnvID    string `json:"dsn_envid,omitempty"`

	// Requeued is when an administrator last put the message back in the
	// queue; the queue lifetime counts from then.
	Requeued time.Time `json:"requeued,omitzero"`
	// Imported is set on a message that crossed an air gap (outbox queue
	// import); the queue lifetime counts from its import.
	Imported *Imported `json:"imported,omitempty"`

	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt"`
	LastError   string    `json:"last_error,omitempty"`
}

// Recipient is one envelope recipient and its delivery state.
type Recipient struct {
	Addr   string          `json:"addr"`
	Status RecipientStatus `json:"status"`
	// Reply is the last answer about this recipient, such as
	// "550 5.1.1 no such user" or a connection error.
	Reply     string    `json:"reply,omitempty"`
	Updated   time.Time `json:"updated,omitzero"`
	DSNNotify string    `json:"dsn_notify,omitempty"`
	DSNOrcpt  string    `json:"dsn_orcpt,omitempty"`
	// Remote is the upstream host that gave Reply, and DSNStatus the RFC
	// 3463 status of a failed recipient ("5.1.1", "4.4.7" when expired):
	// what its bounce reports as Remote-MTA and Status.
	Remote    string `json:"remote,omitempty"`
	DSNStatus string `json:"dsn_status,omitempty"`
}

// Origin says who submitted the message.
type Origin struct {
	Kind   string `json:"kind"`             // "smtp", "sendmail", "maildrop" or "bounce"
	Client string `json:"client,omitempty"` // remote address, or unix socket path
	UID    *int   `json:"uid,omitempty"`    // submitting user, when known
	Helo   string `json:"helo,omitempty"`
	User   string `json:"user,omitempty"` // authenticated user or login name
}

// Imported says where a message imported from an air-gap bundle came from.
type Imported struct {
	At     time.Time `json:"at"`
	Source string    `json:"source"` // the exporting host
	ID     string    `json:"id"`     // the message's queue ID there
	Bundle string    `json:"bundle"`
}

// UIDAttr returns the submitting uid as a log attribute "uid", or an empty
// attribute (which slog leaves out) when unknown, so that no pointer and no
// "<nil>" is ever logged.
func (o Origin) UIDAttr() slog.Attr {
	if o.UID == nil {
		return slog.Attr{}
	}
	return slog.Int("uid", *o.UID)
}

// Pending returns the addresses still to be delivered.
func (e *Envelope) Pending() []string {
	var out []string
	for _, r := range e.Recipients {
		if r.Status == Pending {
			out = append(out, r.Addr)
		}
	}
	return out
}

// Done reports whether no recipient is pending any more.
func (e *Envelope) Done() bool {
	for _, r := range e.Recipients {
		if r.Status == Pending {
			return false
		}
	}
	return true
}

// Since returns when the message's time in the queue started: its arrival,
// its import across an air gap, or its last requeue, whichever is latest.
func (e *Envelope) Since() time.Time {
	t := e.Arrived
	if e.Imported != nil && e.Imported.At.After(t) {
		t = e.Imported.At
	}
	if e.Requeued.After(t) {
		t = e.Requeued
	}
	return t
}
