package vacation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/replygate/replygate/vacation/compose"
	"github.com/replygate/replygate/vacation/dkimsign"
	"github.com/replygate/replygate/vacation/senderauth"
	"github.com/replygate/replygate/vacation/store"
)

// Message is an inbound message the gate allows replies to, as the milter
// hands it over (cmd/replygate converts; vacation does not import milter).
type Message struct {
	QueueID  string
	MailFrom string   // the envelope sender: who gets the reply
	Rcpts    []string // recipients the gate allows a reply for
	Header   []compose.Field
}

// Config holds the responder's knobs; the zero value of each is its default.
type Config struct {
	// Hostname is the right-hand side of replies' Message-IDs; "" means
	// the user's domain.
	Hostname string
	// EnvelopeFromUser sends replies with the user's address as MAIL FROM
	// instead of <> (RFC 3834 section 3.3 recommends <>; some relays
	// refuse it).
	EnvelopeFromUser bool
	// TrustedAuthservID, when set, makes the responder answer only senders
	// that passed SPF, DKIM or DMARC as the Authentication-Results field
	// of that authserv-id says, so forged spam gets no backscatter.
	TrustedAuthservID string
	// Signer, when set, DKIM-signs every reply.
	Signer *dkimsign.Signer
	// Credit, when set, bounds each user's queued replies (flow control).
	Credit *Credit
}

// Responder turns allowed messages into queued replies. Offer does the
// store work while the MTA waits, bounded by its context: a reply that is
// queued has survived, since the MTA only accepts the message after.
type Responder struct {
	store  store.Store
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	outbox Outboxer
	Counts Counts
}

// Outboxer is what the responder needs of the outbox: whether it has room,
// and a note that a reply was queued. nil means unbounded and silent.
type Outboxer interface {
	HasRoom() bool
	Queued()
}

// ErrOutboxFull is returned by Offer when the outbox is at its bound; the
// message is accepted all the same, and the reply is not sent.
var ErrOutboxFull = errors.New("outbox full")

// Counts are the responder's counters.
type Counts struct {
	Queued, Duplicate, Inactive, Own, Full, Unauthenticated, Errors atomic.Uint64
}

// NewResponder returns a responder on s. now is the clock; out, if not
// nil, bounds the outbox and is told of each queued reply.
func NewResponder(s store.Store, cfg Config, log *slog.Logger, now func() time.Time, out Outboxer) *Responder {
	return &Responder{store: s, cfg: cfg, log: log, now: now, outbox: out}
}

// Offer queues a reply for each recipient with an active vacation, once
// per sender and period. It returns the first error; the other recipients
// are still served.
func (r *Responder) Offer(ctx context.Context, m Message) error {
	now := r.now()
	var errs []error
	for _, rcpt := range m.Rcpts {
		if err := r.offerOne(ctx, m, rcpt, now); err != nil {
			r.Counts.Errors.Add(1)
			errs = append(errs, fmt.Errorf("rcpt %s: %w", rcpt, err))
		}
	}
	return errors.Join(errs...)
}

func (r *Responder) offerOne(ctx context.Context, m Message, rcpt string, now time.Time) error {
	v, err := r.store.FindVacation(ctx, rcpt)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	log := r.log.With("queue_id", m.QueueID, "user", v.Address, "mail_from", m.MailFrom)
	if ownAddress(v, m.MailFrom) {
		// The user's own mail (or an alias's) is never answered, as
		// Pigeonhole does: a vacation must not write to its owner.
		r.Counts.Own.Add(1)
		return nil
	}
	if !Active(v, now) {
		r.Counts.Inactive.Add(1)
		log.Debug("vacation not active")
		return nil
	}
	if id := r.cfg.TrustedAuthservID; id != "" {
		if ok, why := senderauth.Passed(m.Header, id); !ok {
			r.Counts.Unauthenticated.Add(1)
			log.Info("no reply to an unauthenticated sender", "auth", why)
			return nil
		}
	}
	if r.outbox != nil && !r.outbox.HasRoom() {
		r.Counts.Full.Add(1)
		return ErrOutboxFull
	}
	if c := r.cfg.Credit; c != nil {
		if !c.Draw(v.Address, now) {
			r.Counts.Full.Add(1)
			return fmt.Errorf("%w: %s has no credit left", ErrOutboxFull, v.Address)
		}
		queued, err := r.queue(ctx, m, v, now, log)
		if !queued {
			c.Release(v.Address, now) // nothing was queued: the credit comes back
		}
		return err
	}
	_, err = r.queue(ctx, m, v, now, log)
	return err
}

// queue composes the reply and queues it unless this period already has
// one, reporting whether it did.
func (r *Responder) queue(ctx context.Context, m Message, v store.Vacation, now time.Time, log *slog.Logger) (bool, error) {
	reply, err := compose.Compose(compose.Settings{
		Address:          v.Address,
		FromName:         v.FromName,
		Subject:          v.Subject,
		Body:             v.Body,
		HTMLBody:         v.HTMLBody,
		EnvelopeFromUser: r.cfg.EnvelopeFromUser,
	}, compose.Original{MailFrom: m.MailFrom, Header: m.Header}, now, r.cfg.Hostname)
	if errors.Is(err, compose.ErrNullSender) {
		return false, nil // the gate never lets these through; nothing to answer
	}
	if err != nil {
		return false, err
	}
	if r.cfg.Signer != nil {
		if reply.Message, err = r.cfg.Signer.Sign(reply.Message); err != nil {
			return false, fmt.Errorf("dkim: %w", err)
		}
	}
	queued, err := r.store.ReserveAndEnqueue(ctx, store.Reservation{
		User:     v.Address,
		Sender:   reply.Rcpt,
		Version:  v.Version,
		Interval: time.Duration(max(v.IntervalDays, 1)) * 24 * time.Hour,
		Now:      now,
	}, store.Reply{User: v.Address, MailFrom: reply.MailFrom, Rcpt: reply.Rcpt, Message: reply.Message, NextTry: now, Created: now})
	if err != nil {
		return false, err
	}
	if !queued {
		r.Counts.Duplicate.Add(1)
		log.Info("reply already sent this period")
		return false, nil
	}
	r.Counts.Queued.Add(1)
	log.Info("reply queued", "rcpt", reply.Rcpt)
	if r.outbox != nil {
		r.outbox.Queued()
	}
	return true, nil
}

// Active reports whether v is in force at now: on or after Start and
// before End, either of which may be open.
func Active(v store.Vacation, now time.Time) bool {
	return (v.Start.IsZero() || !now.Before(v.Start)) && (v.End.IsZero() || now.Before(v.End))
}

// ownAddress reports whether sender is v's address or one of its aliases.
func ownAddress(v store.Vacation, sender string) bool {
	k := store.Key(sender)
	if k == store.Key(v.Address) {
		return true
	}
	for _, a := range v.Aliases {
		if k == store.Key(a) {
			return true
		}
	}
	return false
}
