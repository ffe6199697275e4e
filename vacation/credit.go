package vacation

import (
	"sync"
	"time"
)

// Credit is the responder's flow control (DESIGN.md, "Flow control, not
// collapse"): every queued, unsent reply holds one credit of its user.
// Each user has a small preallocated credit; past it the user draws
// chunks from a shared pool, so one user's storm cannot take every slot
// of the outbox from the others. Credit comes back when a reply is sent
// or dropped; drawn credit that sits unused goes back to the pool after
// Idle, or at once when the pool runs low.
//
// The counts are this process's: after a restart they start at zero while
// the outbox may still hold replies, which the outbox bound still limits.
type Credit struct {
	mu      sync.Mutex
	perUser int
	chunk   int
	pool    int
	low     int // at or below this the pool reclaims unused drawn credit
	idle    time.Duration
	accts   map[string]*account
}

type account struct {
	inFlight int // replies queued and not yet finished
	drawn    int // credit taken from the pool, used or not
	last     time.Time
}

// NewCredit gives each user perUser credits and shares pool among them.
func NewCredit(perUser, pool int, idle time.Duration) *Credit {
	return &Credit{
		perUser: perUser,
		chunk:   max(1, perUser),
		pool:    pool,
		low:     pool / 10,
		idle:    idle,
		accts:   make(map[string]*account),
	}
}

// Draw takes one credit for a reply of user, reporting false when the user
// has none left and the pool is empty.
func (c *Credit) Draw(user string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.accts[user]
	if a == nil {
		a = &account{}
		c.accts[user] = a
	}
	a.last = now
	if a.inFlight < c.perUser+a.drawn {
		a.inFlight++
		return true
	}
	if c.pool <= c.low {
		c.reclaim(now, true)
	}
	if c.pool == 0 {
		c.forget(user, a)
		return false
	}
	take := min(c.chunk, c.pool)
	c.pool -= take
	a.drawn += take
	a.inFlight++
	return true
}

// Release returns the credit of a reply of user that was sent, dropped,
// or never queued.
func (c *Credit) Release(user string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.accts[user]
	if a == nil || a.inFlight == 0 {
		return // queued before a restart: nothing was drawn for it here
	}
	a.inFlight--
	a.last = now
	c.reclaim(now, false)
	c.forget(user, a)
}

// reclaim gives drawn, unused credit back to the pool: that of accounts
// idle for c.idle, or of every account when urgent.
func (c *Credit) reclaim(now time.Time, urgent bool) {
	for user, a := range c.accts {
		if a.drawn == 0 || !urgent && now.Sub(a.last) < c.idle {
			continue
		}
		unused := min(a.drawn, c.perUser+a.drawn-a.inFlight)
		a.drawn -= unused
		c.pool += unused
		c.forget(user, a)
	}
}

func (c *Credit) forget(user string, a *account) {
	if a.inFlight == 0 && a.drawn == 0 {
		delete(c.accts, user)
	}
}

// Pool reports the credit left in the shared pool, for tests and metrics.
func (c *Credit) Pool() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pool
}

// InUse reports the credit held by queued, unsent replies, for metrics.
func (c *Credit) InUse() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, a := range c.accts {
		n += a.inFlight
	}
	return n
}
