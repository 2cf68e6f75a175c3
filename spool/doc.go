// Package spool is Outbox's durable on-disk mail queue.
//
// # The contract
//
// A message is queued when Writer.Commit returns nil: its record and the
// directory entry naming it are on disk and fsynced. Only then may the
// listener answer 250 or sendmail exit 0. A crash, kill -9 or power cut after
// that never loses it. A record leaves the queue only when every recipient has
// been delivered or has failed permanently. Every later change to a record is
// written as a complete new file and renamed over the old one, so a crash
// leaves either the old state or the new one, never a mix.
//
// # Layout
//
// Under the spool root, one directory per state:
//
//	incoming/  records written by sendmail when the daemon is not running;
//	           the daemon validates them and moves them to queue/
//	queue/     records waiting for delivery, owned by the daemon
//	hold/      records an administrator put on hold
//	failed/    dead letters: every recipient failed or the lifetime expired
//	corrupt/   records that failed validation, kept for inspection
//	exported/  records written into an air-gap bundle, kept until the
//	           importing side acknowledges them (package airgap)
//
// Files are named by their queue ID. Temporary files start with "tmp-" and are
// never read as records.
//
// # Record format, version 1
//
// One self-contained file per message, readable with ordinary tools:
//
//	OUTBOX-SPOOL 1\n                 header line: magic and format version
//	<message>                        the raw message as received, CRLF lines
//	<envelope JSON>\n                see Envelope
//	OUTBOX-END body=%016x bodycrc=%08x env=%08x envcrc=%08x\n
//
// The trailer has a fixed length, so a reader finds the envelope by reading
// the end of the file: `tail -n 2 FILE | head -n 1 | jq .` shows it, and
// `sed 1d FILE | head -c SIZE` the message. body and env are byte lengths,
// bodycrc and envcrc CRC-32C (Castagnoli) checksums. A file whose length or
// checksums disagree with its trailer is torn or damaged and is moved to
// corrupt/, never delivered. The message comes first so that it can be
// streamed to disk while it is received; the envelope, known only at the end,
// follows it.
//
// # Exclusion
//
// A runner holds an exclusive flock on a record for the whole delivery
// attempt (see Spool.Lock). A replacement record is locked before it is
// renamed into place, so the lock never lapses while the attempt goes on, and
// the daemon and a foreground `outbox queue flush` never deliver the same
// message at once. The administrator's operations (Hold, Release, Delete,
// Requeue) take the same lock, so they never change a message in flight.
//
// # Compatibility
//
// The header line carries the format version; a reader refuses versions it
// does not know rather than guess. Envelope fields are only ever added, and
// every reader ignores fields it does not know, so a newer release reads an
// older spool as it is.
package spool
