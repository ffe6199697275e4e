// Package senderauth decides whether the sender of a message passed SPF,
// DKIM or DMARC, as reported by the Authentication-Results header field
// (RFC 8601) that the site's own border MTA added.
//
// It does not check anything itself: no DNS, no signatures. It trusts only
// the field whose authserv-id the admin named, because anyone can write an
// Authentication-Results field (RFC 8601 section 5), and it reads that
// field with github.com/emersion/go-msgauth/authres. The responder uses it
// to refuse replies to senders that did not authenticate, so that forged
// spam does not turn into backscatter.
//
// Which fields are read: every trusted field above the first Received
// field, which our own MTA's milters inserted after our MTA wrote its
// Received (Postfix with OpenDKIM and OpenDMARC: one field each, and any
// pass counts). When there is none there, because the checks ran on an
// earlier host, only the topmost trusted field is read (see Passed for
// why): a sender's forgeries sit below it.
//
// Whether the check is on is configuration, and left to the caller:
// DESIGN says that with no authserv-id configured no field is trusted or
// required, so the caller does not call Passed at all.
//
// Passed is pure: no I/O, no logger, no globals.
package senderauth
