package vacation

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/replygate/replygate/vacation/store"
)

func TestCredit(t *testing.T) {
	t0 := time.Date(2026, 12, 24, 10, 0, 0, 0, time.UTC)
	c := NewCredit(2, 4, time.Minute)
	draw := func(user string, want bool) {
		t.Helper()
		if got := c.Draw(user, t0); got != want {
			t.Fatalf("Draw(%s) = %v, want %v (pool %d)", user, got, want, c.Pool())
		}
	}
	// bob's own two credits, then two chunks of 2 from the pool of 4.
	for i := 0; i < 6; i++ {
		draw("bob", true)
	}
	if c.Pool() != 0 {
		t.Errorf("pool = %d after bob drew 4, want 0", c.Pool())
	}
	draw("bob", false)   // nothing left for bob
	draw("carol", true)  // carol's own credit is still there:
	draw("carol", true)  // one user's storm does not starve the others
	draw("carol", false) // but the pool is empty
	// bob's replies go out; his drawn credit sits unused, and comes back
	// to the pool when it is needed (urgently) or after Idle.
	for i := 0; i < 6; i++ {
		c.Release("bob", t0)
	}
	draw("carol", true) // the pool was low: bob's unused credit was reclaimed
	if c.Pool() < 2 {
		t.Errorf("pool = %d after reclaiming bob's 4, want at least 2", c.Pool())
	}
	// Idle reclaim: dave draws from the pool, finishes, and a minute later
	// any release gives his credit back.
	c2 := NewCredit(1, 10, time.Minute)
	c2.Draw("dave", t0)
	c2.Draw("dave", t0) // one chunk of 1 from the pool
	c2.Release("dave", t0)
	c2.Release("dave", t0)
	if c2.Pool() != 9 {
		t.Fatalf("pool = %d, want 9 while dave's credit is not yet idle", c2.Pool())
	}
	c2.Draw("erin", t0.Add(2*time.Minute))
	c2.Release("erin", t0.Add(2*time.Minute))
	if c2.Pool() != 10 {
		t.Errorf("pool = %d after dave was idle a minute, want 10", c2.Pool())
	}
	// Releases for replies queued before a restart are ignored.
	c2.Release("frank", t0)
	if c2.Pool() != 10 {
		t.Errorf("pool = %d after a stray release, want 10", c2.Pool())
	}
}

// TestResponderCredit: a user out of credit gets no more replies queued
// (the milter applies the fail action), and the credit comes back for
// duplicates, which queue nothing.
func TestResponderCredit(t *testing.T) {
	ctx := t.Context()
	st := openStore(t)
	clk := &clock{now: time.Date(2026, 12, 24, 10, 0, 0, 0, time.UTC)}
	if _, err := st.PutVacation(ctx, store.Vacation{Address: "bob@example.com", Body: "Away.", IntervalDays: 7}); err != nil {
		t.Fatal(err)
	}
	credit := NewCredit(2, 0, time.Minute)
	r := NewResponder(st, Config{Credit: credit}, quiet, clk.Now, nil)
	for i, want := range []bool{true, true, false} {
		err := r.Offer(ctx, message(fmt.Sprintf("s%d@example.org", i), "x", "bob@example.com"))
		if (err == nil) != want || !want && !errors.Is(err, ErrOutboxFull) {
			t.Errorf("Offer %d = %v, want ok=%v", i, err, want)
		}
	}
	// A duplicate would need no credit; it must not keep one.
	credit.Release("bob@example.com", clk.Now())
	if err := r.Offer(ctx, message("s0@example.org", "x", "bob@example.com")); err != nil {
		t.Fatalf("duplicate Offer: %v", err)
	}
	if err := r.Offer(ctx, message("s9@example.org", "x", "bob@example.com")); err != nil {
		t.Errorf("Offer after a release and a duplicate = %v, want the credit back", err)
	}
}
