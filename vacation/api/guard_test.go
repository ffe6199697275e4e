package api

import (
	"fmt"
	"testing"
	"time"
)

func TestGuard(t *testing.T) {
	g := newGuard()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	c := "192.0.2.1|token:abc"
	fail := func() (int, bool) {
		t.Helper()
		if w := g.admit(c, now); w != 0 {
			t.Fatalf("attempt refused (wait %v), want it admitted", w)
		}
		return g.judged(c, true, now)
	}
	for i := 1; i <= freeFailures; i++ {
		fail()
	}
	// Past the free failures each attempt waits a doubling back-off.
	var prev time.Duration
	for i := freeFailures + 1; i < lockoutAfter; i++ {
		w := g.admit(c, now)
		if w <= 0 || w < prev || w > maxBackoff {
			t.Fatalf("failure %d: wait %v (previous %v), want a growing back-off up to %v", i, w, prev, maxBackoff)
		}
		prev = w
		now = now.Add(w)
		if _, locked := fail(); locked {
			t.Fatalf("locked out after %d failures, want %d", i, lockoutAfter)
		}
	}
	now = now.Add(maxBackoff)
	if _, locked := fail(); !locked {
		t.Fatalf("not locked out after %d failures", lockoutAfter)
	}
	if w := g.admit(c, now.Add(lockout-time.Second)); w <= 0 {
		t.Errorf("locked-out client may try again before the lockout ends")
	}
	// Another credential from the same address (a colleague behind the
	// same NAT, another integration on the same host) is not held back.
	if w := g.admit("192.0.2.1|cert", now); w != 0 {
		t.Errorf("another credential from the same address waits %v", w)
	}
	g.judged("192.0.2.1|cert", false, now)
	// After the lockout and the forget period, a client starts afresh.
	now = now.Add(lockout + forget + time.Second)
	if n, _ := fail(); n != 1 {
		t.Errorf("count after forget = %d, want 1", n)
	}
}

// TestGuardParallel: guesses sent at once get no more tries than guesses
// sent one after another.
func TestGuardParallel(t *testing.T) {
	g := newGuard()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	admitted := 0
	for i := 0; i < 200; i++ {
		if g.admit("198.51.100.7|token:abc", now) == 0 {
			admitted++
		}
	}
	if admitted != freeFailures {
		t.Errorf("%d of 200 simultaneous attempts admitted, want %d", admitted, freeFailures)
	}
	for i := 0; i < admitted; i++ {
		g.judged("198.51.100.7|token:abc", true, now)
	}
	if w := g.admit("198.51.100.7|token:abc", now); w == 0 {
		t.Errorf("admitted at once after %d failures", freeFailures)
	}
}

// TestGuardBounded: a spray of client addresses does not grow the guard
// without bound, and making room never lifts a lockout.
func TestGuardBounded(t *testing.T) {
	g := newGuard()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	locked := "203.0.113.9|token:abc"
	for i := 0; i < lockoutAfter; i++ {
		g.admit(locked, now)
		g.judged(locked, true, now)
	}
	for i := 0; i < 3*maxClients; i++ {
		k := fmt.Sprintf("10.%d.%d.%d|none", i>>16&255, i>>8&255, i&255)
		at := now.Add(time.Duration(i) * time.Millisecond)
		g.admit(k, at)
		g.judged(k, true, at)
	}
	if n := len(g.clients); n > maxClients {
		t.Errorf("guard holds %d clients, want at most %d", n, maxClients)
	}
	if w := g.admit(locked, now.Add(time.Minute)); w <= 0 {
		t.Errorf("a lockout was lifted to make room")
	}
}

func TestClientAddr(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:4567":                "192.0.2.1",
		"[2001:db8:1:2:aaaa::1]:4567":   "2001:db8:1:2::/64",
		"[2001:db8:1:2:bbbb:cccc::9]:1": "2001:db8:1:2::/64",
		"@":                             "local",
		"":                              "local",
		"[::ffff:192.0.2.1]:80":         "192.0.2.1",
	} {
		if got := clientAddr(in); got != want {
			t.Errorf("clientAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
