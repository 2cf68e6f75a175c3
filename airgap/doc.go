// Package airgap carries queued mail across an air gap: a relay that never
// reaches its upstream exports its queue into a bundle file (removable
// media, a data diode), the connected relay imports it and delivers, and an
// acknowledgement file travels back so the exporting side can forget the
// messages.
//
// # The promises
//
//   - Nothing is queued from a bundle unless all of it checked out: its
//     SHA-256, its signature (when trusted_keys is set: it must be signed by
//     one of them), its structure, every record's own checksums, and its
//     manifest. A damaged, truncated or untrusted bundle is refused with
//     ErrRefused and the spool is left as it was.
//   - Each message is queued once, however often the same or overlapping
//     bundles are imported: the import journal (see journal.go) remembers
//     every (source host, queue ID) for at least the queue lifetime. A
//     message is queued before it is journaled, so a crash in between can
//     cause one duplicate, never a loss (at least once, as everywhere).
//   - An export never loses mail: the bundle is on disk (fsynced, renamed
//     into place) before its messages leave queue/ for exported/, where
//     they stay until an acknowledgement names them.
//
// # Bundle format, version 1
//
// A POSIX ustar archive, so `tar tvf` lists it and `tar xf` unpacks it,
// followed by a seal line:
//
//	bundle.json              {"format":"outbox-bundle","version":1,"id":ID,
//	                          "source":HOST,"created":RFC3339}
//	messages/ID              one per message, in ascending ID order: the
//	 ...                     spool record as stored (format version 1,
//	                         spool/doc.go): self-contained, its own CRCs
//	manifest.jsonl           one JSON line per message, in the same order:
//	                         {"id","from","to":[…],"size","record_size","sha256"}
//	                         size: message bytes; record_size and sha256:
//	                         of messages/ID
//	(end-of-archive: zero blocks)
//	OUTBOX-BUNDLE-END sha256=HEX[ ed25519=KEY sig=SIG]\n
//
// The seal's sha256 covers every byte before it. KEY is the signer's
// ed25519 public key and SIG its signature, both base64, over the seal
// text up to and excluding " ed25519=" ("OUTBOX-BUNDLE-END sha256=HEX").
// The message entries come before the manifest so that an export streams:
// memory does not grow with the number of messages on either side. The
// importer checks the manifest against the entries in one pass by hashing
// both sides' (id, record_size, sha256) sequences.
//
// A reader refuses a version it does not know. Fields of bundle.json and
// of manifest lines are only ever added.
//
// # Acknowledgement format, version 1
//
// A text file, one item per line, sealed the same way:
//
//	OUTBOX-ACK 1
//	bundle ID
//	source HOST            the exporting host
//	importer HOST
//	created RFC3339
//	id ID                  one per message now in the importer's care
//	OUTBOX-ACK-END sha256=HEX[ ed25519=KEY sig=SIG]\n
//
// It names every message of the bundle the importer has queued, now or in
// an earlier import. `outbox queue ack` deletes exactly those that are in
// exported/ on the host named by source.
package airgap
