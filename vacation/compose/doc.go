// Package compose writes the automatic reply of the vacation responder:
// given the user's vacation settings and the envelope sender and header of
// the message being answered, it returns the RFC 5322 bytes of the reply
// and its envelope.
//
// The rules come from RFC 3834 (automatic responses) and RFC 5230 (Sieve
// vacation), with Dovecot Pigeonhole's vacation action as the reference
// for the details the RFCs leave open:
//
//   - the reply goes to the envelope sender, never to <>;
//   - it comes from the user, subject "Auto: <original subject>" unless
//     the user set one, with In-Reply-To and References so it threads;
//   - it says what it is: Auto-Submitted: auto-replied, and the
//     X-Allow-Auto-Reply, X-Auto-Response-Suppress and Precedence fields
//     that other responders (and Exchange) honour, so two responders
//     cannot talk to each other;
//   - it never quotes the original body, which is not even an input.
//
// Everything taken from the original header is outside input: it is
// bounded, decoded, and stripped of control characters before use, so no
// CR or LF from a sender (or from a setting) can start a header field of
// its own. go-message refuses such values too; that is the second line,
// not the first.
//
// Compose is pure: no I/O, no clock (the time is an argument) and no
// randomness. The Message-ID and the MIME boundary are derived from a hash
// of the inputs and the time, so the same inputs give the same bytes
// (which keeps golden files stable) and different replies get different
// identifiers: two replies share a Message-ID only when every input and
// the nanosecond are the same, that is, when they are the same reply.
//
// What to answer, and how often, is decided elsewhere (policy, the
// de-duplication in the store); sending is the outbox's job.
package compose
