package api

import (
	"fmt"
	"testing"
	"time"
)

func TestGuard(t *testing.T) {
	g := newGuard()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	c := "192.0.2.1"
	for i := 1; i <= freeFailures; i++ {
		if w := g.wait(c, now); w != 0 {
			t.Fatalf("failure %d: wait %v, want none within the free failures", i, w)
		}
		g.fail(c, now)
	}
	// Past the free failures each attempt waits a doubling back-off.
	var prev time.Duration
	for i := freeFailures + 1; i < lockoutAfter; i++ {
		w := g.wait(c, now)
		if w <= 0 || w < prev || w > maxBackoff {
			t.Fatalf("failure %d: wait %v (previous %v), want a growing back-off up to %v", i, w, prev, maxBackoff)
		}
		prev = w
		now = now.Add(w)
		if g.wait(c, now) != 0 {
			t.Fatalf("failure %d: still waiting after the back-off", i)
		}
		if _, locked := g.fail(c, now); locked {
			t.Fatalf("locked out after %d failures, want %d", i, lockoutAfter)
		}
	}
	if _, locked := g.fail(c, now); !locked {
		t.Fatalf("not locked out after %d failures", lockoutAfter)
	}
	if w := g.wait(c, now.Add(lockout-time.Second)); w <= 0 {
		t.Errorf("locked-out client may try again before the lockout ends")
	}
	if g.wait("192.0.2.2", now) != 0 {
		t.Errorf("another client is held back by this one's failures")
	}
	// After the lockout and the forget period, a client starts afresh.
	now = now.Add(lockout + forget + time.Second)
	if w := g.wait(c, now); w != 0 {
		t.Errorf("wait after lockout and forget = %v", w)
	}
	if n, _ := g.fail(c, now); n != 1 {
		t.Errorf("count after forget = %d, want 1", n)
	}
}

// TestGuardBounded: a spray of client addresses does not grow the guard
// without bound.
func TestGuardBounded(t *testing.T) {
	g := newGuard()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for i := 0; i < 3*maxClients; i++ {
		g.fail(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), now.Add(time.Duration(i)*time.Millisecond))
	}
	if n := len(g.clients); n > maxClients {
		t.Errorf("guard holds %d clients, want at most %d", n, maxClients)
	}
}
