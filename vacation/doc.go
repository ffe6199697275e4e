// Package vacation is the built-in vacation responder: it turns messages
// the gate allows into replies, at most one per sender and period, and
// sends them from a durable outbox.
//
// The Responder does the store work while the MTA waits (bounded by its
// context) so that a reply is queued before the message is accepted; the
// Outbox sends queued replies through the relay with leases and back-off.
// Settings and the outbox live in vacation/store; replies are built by
// vacation/compose. This package never imports the milter: cmd/replygate
// connects the two.
package vacation
