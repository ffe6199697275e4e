package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/replygate/replygate/internal/mtalab"
	"github.com/replygate/replygate/vacation/store"
)

// TestPostgresOutage: a store made while PostgreSQL is down fails fast,
// says the database is unreachable, and works once the server is up
// (migrating then); after a later stop and start it recovers by itself.
// It runs a private cluster, so the shared server is never stopped.
func TestPostgresOutage(t *testing.T) {
	t.Parallel()
	pg := mtalab.StartPostgres(t)
	pg.Stop(t)
	s, err := store.NewPostgres(pg.DSN())
	if err != nil {
		t.Fatalf("NewPostgres() = %v", err)
	}
	defer s.Close()

	// down: every call fails at once, as unreachable
	down := func(when string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		_, err := s.FindVacation(ctx, "bob@example.com")
		if err == nil || !store.Unreachable(err) {
			t.Errorf("%s: FindVacation() = %v, want an unreachable error", when, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: FindVacation() failed after %v, want a refused connection to fail at once", when, d)
		}
	}
	// up: calls work again within a few seconds (a connection left over
	// from before may fail one call), with no help from outside
	up := func(when string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := s.FindVacation(ctx, "bob@example.com")
			cancel()
			if err == nil || errors.Is(err, store.ErrNotFound) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: FindVacation() = %v for 10s, want the store back", when, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	down("down at start")
	pg.Start(t)
	up("first start")
	if _, err := s.PutVacation(context.Background(), store.Vacation{Address: "bob@example.com", Body: "Away.", IntervalDays: 7}); err != nil {
		t.Fatalf("PutVacation() = %v", err)
	}
	pg.Stop(t)
	down("stopped")
	pg.Start(t)
	up("started again")
	if v, err := s.FindVacation(context.Background(), "bob@example.com"); err != nil || v.Body != "Away." {
		t.Errorf("FindVacation() after the outage = %+v, %v; want bob's vacation", v, err)
	}
	if store.Unreachable(store.ErrNotFound) || store.Unreachable(store.ErrNewerSchema) {
		t.Errorf("Unreachable(ErrNotFound or ErrNewerSchema) = true, want false")
	}
}
