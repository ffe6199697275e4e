package vacation

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/replygate/replygate/vacation/store"
)

// OutboxConfig holds the worker's knobs; the zero value of each is its default.
type OutboxConfig struct {
	Relay    string // host:port of the SMTP relay
	Helo     string // name in EHLO; default "localhost"
	Sessions int    // relay sessions at once; default 2
	// Lease is how long a claimed reply is ours: another process sharing
	// the store takes it over when the lease ends, so it is also how long
	// the replies of a process that died wait. Default 2×Timeout+10s.
	Lease time.Duration
	Poll  time.Duration // how often to look for due retries; default 5s
	// Timeout bounds one SMTP exchange; default 60s, and never more than
	// half the Lease, so that a send ends well inside its lease.
	Timeout  time.Duration
	MaxTries int // attempts before a reply is dropped; default 30
	// Credit, when set, gets back the credit of every reply that is done.
	Credit *Credit
	// MaxQueued bounds the outbox: past it new replies are refused (and
	// counted), so a storm cannot fill the disk or the relay's queue.
	// Default 10000.
	MaxQueued int
}

func (c OutboxConfig) withDefaults() OutboxConfig {
	if c.Helo == "" {
		c.Helo = "localhost"
	}
	if c.Sessions <= 0 {
		c.Sessions = 2
	}
	if c.Timeout <= 0 {
		c.Timeout = 60 * time.Second
	}
	if c.Lease <= 0 {
		// Long enough for one send (Timeout bounds it), short enough that
		// a reply claimed by a process that died goes out soon after.
		c.Lease = 2*c.Timeout + 10*time.Second
	}
	// A send that outlived its lease could be sent again by another
	// process meanwhile: the lease bounds the send, not the other way.
	c.Timeout = min(c.Timeout, c.Lease/2)
	if c.Poll <= 0 {
		c.Poll = 5 * time.Second
	}
	if c.MaxTries <= 0 {
		c.MaxTries = 30
	}
	if c.MaxQueued <= 0 {
		c.MaxQueued = 10000
	}
	return c
}

// Outbox sends queued replies through the relay. Replies are claimed
// with a lease, so a crash between claiming and sending only delays them,
// and several processes sharing a store never send one twice at once.
type Outbox struct {
	store store.Store
	cfg   OutboxConfig
	log   *slog.Logger
	now   func() time.Time
	wake  chan struct{}
	// queued counts the replies in the outbox, as this process sees them:
	// loaded at Open, raised by Queued, lowered when one is done. With
	// several processes sharing a store each bounds what it adds.
	queued atomic.Int64
	loaded atomic.Bool // Load succeeded; Run retries it until then

	Sent, Retried, Dropped atomic.Uint64
}

// NewOutbox returns a worker on s.
func NewOutbox(s store.Store, cfg OutboxConfig, log *slog.Logger, now func() time.Time) *Outbox {
	return &Outbox{store: s, cfg: cfg.withDefaults(), log: log, now: now, wake: make(chan struct{}, 1)}
}

// Load reads how many replies are already queued (after a restart).
// When the store cannot say (PostgreSQL is down), Run asks again until
// it can.
func (o *Outbox) Load(ctx context.Context) error {
	n, err := o.store.OutboxLen(ctx)
	if err != nil {
		return err
	}
	o.queued.Store(int64(n))
	o.loaded.Store(true)
	return nil
}

// storeTimeout bounds each store call of the worker, so that a database
// that stopped answering (not refusing: a network cut, a frozen server)
// holds up neither the worker nor a shutdown for long.
const storeTimeout = 15 * time.Second

// storeCtx is a context for one store call: ctx's values, not its
// cancellation (an outcome must be recorded even during shutdown), and
// storeTimeout.
func storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
}

// HasRoom reports whether the outbox takes another reply.
func (o *Outbox) HasRoom() bool { return o.queued.Load() < int64(o.cfg.MaxQueued) }

// Queued records a reply the responder queued and wakes the worker.
func (o *Outbox) Queued() {
	o.queued.Add(1)
	o.Wake()
}

// Wake tells the worker that there may be work. It never blocks.
func (o *Outbox) Wake() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Run sends replies until ctx is done, then lets the sends in progress
// finish (each is bounded by one deadline of Timeout) and returns.
func (o *Outbox) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, o.cfg.Sessions)
	nextPrune := o.now()
	claimFailing := false
	for {
		if !o.loaded.Load() {
			sctx, cancel := storeCtx(ctx)
			o.Load(sctx)
			cancel()
		}
		if now := o.now(); !now.Before(nextPrune) {
			sctx, cancel := storeCtx(ctx)
			n, err := o.store.PruneReplyLog(sctx, now)
			cancel()
			nextPrune = now.Add(time.Hour)
			if err != nil {
				o.log.Warn("pruning the reply log failed", "err", err)
				nextPrune = now.Add(time.Minute)
			} else if n > 0 {
				o.log.Info("reply log pruned", "periods", n)
			}
		}
		// Claim no more than there are free sessions: the rest stays
		// unleased for another process, and the relay never has more
		// than Sessions connections from us.
		free := o.cfg.Sessions - len(slots)
		var due []store.Reply
		claimed := o.now()
		if free > 0 {
			sctx, cancel := storeCtx(ctx)
			var err error
			due, err = o.store.Claim(sctx, claimed, o.cfg.Lease, free)
			cancel()
			switch {
			case err != nil && !claimFailing:
				// Once per outage, not once per poll.
				o.log.Warn("outbox claim failed; replies wait, and claims are retried every poll", "err", err, "poll", o.cfg.Poll.String())
				claimFailing = true
			case err != nil:
				o.log.Debug("outbox claim failed", "err", err)
			case claimFailing:
				o.log.Info("outbox claims work again")
				claimFailing = false
			}
		}
		for _, r := range due {
			slots <- struct{}{}
			wg.Go(func() {
				defer o.Wake() // a free session: look for more
				defer func() { <-slots }()
				o.deliver(ctx, r, claimed.Add(o.cfg.Lease))
			})
		}
		if len(due) == free && free > 0 {
			continue // maybe more is due
		}
		select {
		case <-ctx.Done():
			return
		case <-o.wake:
		case <-time.After(o.cfg.Poll):
		}
	}
}

// deliver sends one reply, claimed until leaseEnd, and records the
// outcome. A 5xx answer is permanent: the reply is dropped and logged.
// Anything else (4xx, a timeout, a refused connection) is retried with
// back-off.
func (o *Outbox) deliver(ctx context.Context, r store.Reply, leaseEnd time.Time) {
	log := o.log.With("user", r.User, "rcpt", r.Rcpt, "outbox_id", r.ID)
	quit, err := o.send(r)
	defer quit()
	var se *smtp.SMTPError
	switch {
	case err == nil:
		defer o.finished(r)
		// Done before QUIT: the relay has the reply, and until Done
		// commits a crash sends it again after the restart.
		o.done(ctx, r, leaseEnd, log)
		o.Sent.Add(1)
		log.Info("reply sent", "attempts", r.Attempts+1)
	case errors.As(err, &se) && se.Code/100 == 5, r.Attempts+1 >= o.cfg.MaxTries:
		defer o.finished(r)
		o.done(ctx, r, leaseEnd, log)
		o.Dropped.Add(1)
		log.Warn("reply dropped", "err", err, "attempts", r.Attempts+1)
	default:
		next := o.now().Add(backoff(r.Attempts))
		sctx, cancel := storeCtx(ctx)
		rerr := o.store.Retry(sctx, r.ID, r.Claim, next, err.Error())
		cancel()
		switch {
		case errors.Is(rerr, store.ErrLeaseLost), errors.Is(rerr, store.ErrNotFound):
			log.Warn("reply not rescheduled: its lease ran out and another claimer holds it or has finished it", "err", err)
		case rerr != nil:
			log.Error("reply not rescheduled; retried when its lease ends", "err", rerr)
		}
		o.Retried.Add(1)
		log.Info("reply deferred", "err", err, "next_try", next)
	}
}

// done removes a reply that left for good (sent or dropped). If the
// store fails (PostgreSQL is down), done keeps trying until the lease
// ends, or until shutdown: while the lease holds nobody else may claim
// the reply, and a late Done still wins if nobody has. Given up, the
// reply goes out again once its lease has ended: sent twice, never lost.
func (o *Outbox) done(ctx context.Context, r store.Reply, leaseEnd time.Time, log *slog.Logger) {
	wait := 250 * time.Millisecond
	for {
		sctx, cancel := storeCtx(ctx)
		err := o.store.Done(sctx, r.ID, r.Claim)
		cancel()
		switch {
		case err == nil:
			return
		case errors.Is(err, store.ErrLeaseLost), errors.Is(err, store.ErrNotFound):
			// Our lease ran out and another claimer took the reply (or
			// already finished it): it may go out twice.
			log.Error("reply finished after its lease ran out; another claimer took it and may send it again", "err", err)
			return
		}
		if !o.now().Add(wait).Before(leaseEnd) || ctx.Err() != nil {
			log.Error("reply not marked done; it is sent again after its lease", "err", err)
			return
		}
		log.Warn("marking a reply done failed; trying again", "err", err, "in", wait.String())
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// finished accounts for a reply that left the outbox.
func (o *Outbox) finished(r store.Reply) {
	o.queued.Add(-1)
	if o.cfg.Credit != nil {
		o.cfg.Credit.Release(r.User, o.now())
	}
}

// backoff doubles from 5 s up to 1 h between attempts: a relay that is
// restarting is retried soon, one that is down for long is not hammered.
func backoff(attempts int) time.Duration {
	d := 5 * time.Second << min(attempts, 10)
	return min(d, time.Hour)
}

// send hands r to the relay and returns as soon as the relay has answered
// the end of DATA. A 2xx answer means the relay has the reply: the caller
// records that (Done) and only then calls quit, which says QUIT and
// closes the connection. A kill -9 between the relay's answer and Done
// sends the reply again after the restart; waiting for QUIT's answer
// first would widen that window by a round trip, or by the whole timeout
// with a relay that is slow to answer QUIT. quit is never nil.
func (o *Outbox) send(r store.Reply) (quit func(), err error) {
	quit = func() {}
	// One deadline for the whole exchange, the dial included.
	deadline := time.Now().Add(o.cfg.Timeout)
	conn, err := (&net.Dialer{Deadline: deadline}).Dial("tcp", o.cfg.Relay)
	if err != nil {
		return quit, err
	}
	conn.SetDeadline(deadline)
	c := smtp.NewClient(conn)
	quit = func() { c.Close() }
	if err := c.Hello(o.cfg.Helo); err != nil {
		return quit, err
	}
	if err := c.Mail(r.MailFrom, nil); err != nil {
		return quit, err
	}
	if err := c.Rcpt(r.Rcpt, nil); err != nil {
		return quit, err
	}
	w, err := c.Data()
	if err != nil {
		return quit, err
	}
	if _, err := w.Write(r.Message); err != nil {
		return quit, err
	}
	if err := w.Close(); err != nil {
		return quit, err
	}
	// The relay has taken the message: from here on it is sent, whatever
	// QUIT says; retrying would send it twice.
	return func() {
		defer c.Close()
		if err := c.Quit(); err != nil {
			o.log.Debug("QUIT after a sent reply failed", "rcpt", r.Rcpt, "err", err)
		}
	}, nil
}

// Depth reports the replies in the outbox as this process counts them.
func (o *Outbox) Depth() int64 { return o.queued.Load() }
