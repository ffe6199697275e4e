// Package store keeps what the vacation responder must not lose: users'
// vacation settings and stamping preferences, the reply log that makes a
// reply go out once per sender and interval, and the durable outbox.
//
// Store is the one interface; SQLite (embedded, the default) and
// PostgreSQL (several MTAs sharing state) implement it, and the
// storetest package holds the conformance suite both must pass.
package store

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned when an address has no vacation, and by Done
// and Retry when the reply is no longer queued.
var ErrNotFound = errors.New("not found")

// ErrLeaseLost is returned by Done and Retry when the reply was claimed
// again after the claim they name: that claim's lease ran out, and the
// reply now belongs to its newer claimer, which will finish it.
var ErrLeaseLost = errors.New("lease lost: the reply was claimed again")

// Vacation is one user's settings.
type Vacation struct {
	Address      string   // the user's address in Key form (lower-cased)
	Aliases      []string // other addresses that name the user in To/Cc
	Subject      string   // "" means "Auto: <original subject>"
	Body         string   // text/plain body, UTF-8
	HTMLBody     string   // optional text/html alternative
	FromName     string   // display name of the reply's From
	Start, End   time.Time
	TimeZone     string // IANA zone the window's plain dates were given in
	IntervalDays int    // at most one reply per sender per this many days; >= 1
	// Version changes whenever the text (subject, bodies) changes, so a
	// new text starts a new period (RFC 5230 section 4.2, :handle).
	Version int64
	Updated time.Time
}

// Reply is one message in the outbox.
type Reply struct {
	ID        int64
	User      string // the vacationing user
	MailFrom  string // envelope sender of the reply; "" is <>
	Rcpt      string // envelope recipient: the original sender
	Message   []byte // the whole RFC 5322 message
	Attempts  int
	NextTry   time.Time
	LastError string
	Created   time.Time
	// Claim numbers the claims of this reply: Store.Claim sets it, and
	// Done and Retry act only for the newest, so a claimer whose lease
	// ran out cannot finish a reply that another has claimed since.
	Claim int64
}

// Reservation names one reply period: user answered sender for the
// vacation text of Version, for Interval from Now.
type Reservation struct {
	User     string
	Sender   string
	Version  int64
	Interval time.Duration
	Now      time.Time
}

// Store is the responder's state. Every method is safe for concurrent
// use, and by several processes sharing one database.
type Store interface {
	PutVacation(ctx context.Context, v Vacation) (Vacation, error) // sets Version and Updated
	GetVacation(ctx context.Context, address string) (Vacation, error)
	DeleteVacation(ctx context.Context, address string) error
	ListVacations(ctx context.Context) ([]Vacation, error) // by address
	// FindVacation returns the vacation whose address or alias is rcpt.
	FindVacation(ctx context.Context, rcpt string) (Vacation, error)

	// ReserveAndEnqueue records that r.User answers r.Sender for this
	// period and queues reply, in one transaction. It reports false, and
	// queues nothing, when the period already has a reply: one INSERT
	// ... ON CONFLICT, not a read then a write, so two MTAs sharing a
	// database cannot both reply.
	ReserveAndEnqueue(ctx context.Context, r Reservation, reply Reply) (bool, error)
	// PruneReplyLog forgets reply periods that ended before now, so the
	// log holds one row per sender answered recently, not per sender ever.
	PruneReplyLog(ctx context.Context, now time.Time) (int64, error)

	// Claim leases up to max replies due at now for lease: no other
	// claimer gets them until the lease expires. Each reply's Claim is
	// higher than any claim of it before.
	Claim(ctx context.Context, now time.Time, lease time.Duration, max int) ([]Reply, error)
	// Done removes a sent (or permanently failed) reply, if claim is
	// still its newest claim (else ErrLeaseLost). A lease that ran out
	// with no newer claim is still good: nobody else has the reply.
	Done(ctx context.Context, id, claim int64) error
	// Retry puts a reply back for next, counting the attempt, if claim
	// is still its newest claim (else ErrLeaseLost).
	Retry(ctx context.Context, id, claim int64, next time.Time, lastErr string) error
	// OutboxLen counts queued replies.
	OutboxLen(ctx context.Context) (int, error)

	SetStampAll(ctx context.Context, address string, on bool) error
	StampAll(ctx context.Context, address string) (bool, error)
	// StampAllSenders lists every address that asked for all its mail to
	// be stamped, for the gate's in-memory opt-in set.
	StampAllSenders(ctx context.Context) ([]string, error)

	// API tokens (see Token): stored hashed, revocable, shared by every
	// instance that shares the store.
	CreateToken(ctx context.Context, t Token) error
	GetToken(ctx context.Context, id string) (Token, error)
	ListTokens(ctx context.Context) ([]Token, error)
	DeleteToken(ctx context.Context, id string) error

	Close() error
}
