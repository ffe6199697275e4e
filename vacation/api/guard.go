package api

import (
	"net"
	"sync"
	"time"
)

// guard slows down clients that keep failing to authenticate. A record is
// kept per client address and credential tried (see failKey): the first
// freeFailures failures cost nothing (typos, a rotated token), after that
// each failure doubles the wait before the next attempt is even looked
// at, and lockoutAfter failures lock the record out for lockout. A record
// is forgotten forget after its last failure.
//
// Attempts are admitted before they are checked and counted while in
// flight, so parallel guesses get no more tries than serial ones: past
// the free failures one attempt at a time is examined. Waiting is the
// client's job: a refused attempt is answered 429 with Retry-After at
// once, so a flood holds no goroutines.
type guard struct {
	mu      sync.Mutex
	clients map[string]*strikes
}

type strikes struct {
	n           int // failures
	inFlight    int // attempts admitted and not yet judged
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

// admit returns 0 and counts an attempt of key in flight, or how long the
// client must wait before its next attempt is looked at. Every admitted
// attempt must be judged.
func (g *guard) admit(key string, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.clients[key]
	if s != nil && g.stale(s, now) {
		delete(g.clients, key)
		s = nil
	}
	if s == nil {
		if len(g.clients) >= maxClients {
			g.prune(now)
		}
		s = &strikes{}
		g.clients[key] = s
	}
	switch {
	case now.Before(s.lockedUntil):
		return s.lockedUntil.Sub(now)
	case s.n+s.inFlight < freeFailures:
	case s.inFlight > 0:
		return time.Second // one attempt at a time is being judged
	default:
		if next := s.last.Add(backoffAfter(s.n)); now.Before(next) {
			return next.Sub(now)
		}
	}
	s.inFlight++
	return 0
}

func backoffAfter(n int) time.Duration {
	d := time.Second << min(max(n-freeFailures, 0), 6)
	return min(d, maxBackoff)
}

// judged ends an admitted attempt of key. A failure is counted and
// returns the count and whether it locked the key out; a success leaves
// earlier failures to be forgotten in time.
func (g *guard) judged(key string, failed bool, now time.Time) (int, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.clients[key]
	if s == nil { // pruned while in flight
		s = &strikes{inFlight: 1}
		g.clients[key] = s
	}
	s.inFlight--
	if !failed {
		if s.n == 0 && s.inFlight == 0 {
			delete(g.clients, key)
		}
		return s.n, false
	}
	s.n++
	s.last = now
	if s.n >= lockoutAfter && !now.Before(s.lockedUntil) {
		s.lockedUntil = now.Add(lockout)
		return s.n, true
	}
	return s.n, false
}

// stale reports a record with nothing left to remember.
func (g *guard) stale(s *strikes, now time.Time) bool {
	return s.inFlight == 0 && now.Sub(s.last) > forget && !now.Before(s.lockedUntil)
}

// prune drops stale records; if that does not make room, it drops
// records neither locked out nor in flight until a quarter of the table
// is free, so memory stays bounded, the work is amortized over many
// inserts, and no lockout is lifted early. The worst case is that a
// client spraying addresses resets some counts of its own.
func (g *guard) prune(now time.Time) {
	for k, s := range g.clients {
		if g.stale(s, now) {
			delete(g.clients, k)
		}
	}
	for k, s := range g.clients {
		if len(g.clients) <= maxClients*3/4 {
			return
		}
		if s.inFlight == 0 && !now.Before(s.lockedUntil) {
			delete(g.clients, k)
		}
	}
}

// clientAddr is the address failures are counted by: the IP, or its /64
// for IPv6, where one host commonly holds a whole /64.
func clientAddr(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil || host == "" {
		return "local"
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
