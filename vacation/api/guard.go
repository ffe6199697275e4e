package api

import (
	"sync"
	"time"
)

// guard slows down clients that keep failing to authenticate, by client
// address: the first freeFailures failures cost nothing (typos, a
// rotated token), after that each failure doubles the wait before the
// next attempt is even looked at, and lockoutAfter failures lock the
// address out for lockout. A client's record is forgotten forget after
// its last failure. Waiting is the client's job: a throttled request is
// answered 429 with Retry-After at once, so a flood holds no goroutines
// and a brute force learns nothing during its wait.
type guard struct {
	mu      sync.Mutex
	clients map[string]*strikes
}

type strikes struct {
	n           int
	last        time.Time
	lockedUntil time.Time
}

const (
	freeFailures = 5
	lockoutAfter = 20
	lockout      = 15 * time.Minute
	forget       = 15 * time.Minute
	maxBackoff   = time.Minute
	// maxClients bounds the guard's memory under a spray of addresses.
	maxClients = 10000
)

func newGuard() *guard { return &guard{clients: make(map[string]*strikes)} }

// wait returns how long client must wait before its next attempt counts;
// 0 lets it in.
func (g *guard) wait(client string, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.clients[client]
	if s == nil {
		return 0
	}
	if now.Before(s.lockedUntil) {
		return s.lockedUntil.Sub(now)
	}
	if s.n < freeFailures {
		return 0
	}
	next := s.last.Add(backoffAfter(s.n))
	if now.Before(next) {
		return next.Sub(now)
	}
	return 0
}

func backoffAfter(n int) time.Duration {
	d := time.Second << min(n-freeFailures, 6)
	return min(d, maxBackoff)
}

// fail counts a failure of client and returns its count and, when this
// failure locked it out, true.
func (g *guard) fail(client string, now time.Time) (int, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.clients[client]
	if s != nil && now.Sub(s.last) > forget && !now.Before(s.lockedUntil) {
		s = nil // an old record: start over
	}
	if s == nil {
		if len(g.clients) >= maxClients {
			g.prune(now)
		}
		s = &strikes{}
		g.clients[client] = s
	}
	s.n++
	s.last = now
	if s.n >= lockoutAfter && !now.Before(s.lockedUntil) {
		s.lockedUntil = now.Add(lockout)
		return s.n, true
	}
	return s.n, false
}

// prune drops forgotten records; if every record is live, it drops the
// oldest half, so memory stays bounded and the worst case is that an
// attacker who sprays 10,000 addresses resets some of its own counts.
func (g *guard) prune(now time.Time) {
	for k, s := range g.clients {
		if now.Sub(s.last) > forget && !now.Before(s.lockedUntil) {
			delete(g.clients, k)
		}
	}
	if len(g.clients) < maxClients {
		return
	}
	var oldest time.Time
	for _, s := range g.clients {
		if oldest.IsZero() || s.last.Before(oldest) {
			oldest = s.last
		}
	}
	mid := oldest.Add(now.Sub(oldest) / 2)
	for k, s := range g.clients {
		if s.last.Before(mid) || len(g.clients) >= maxClients {
			delete(g.clients, k)
		}
	}
}
