// Package storetest is the conformance suite for store.Store: every
// backend (SQLite, PostgreSQL) runs the same Run, so they cannot drift.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/replygate/replygate/vacation/store"
)

// Open returns a store whose data lives in dir. Two calls with the same
// dir must share one database (the suite reopens a store and runs two
// handles side by side, as two processes or two MTAs would); different
// dirs must not share anything. dir is a fresh t.TempDir() of the
// calling test: a file backend keeps its file there, a server backend
// maps it to a database or schema of its own. The suite closes every
// store it opens.
type Open func(t *testing.T, dir string) store.Store

// t0 is the suite's clock: no test reads the wall clock.
var t0 = time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)

const week = 7 * 24 * time.Hour

// Run runs the suite against the backend that open opens.
func Run(t *testing.T, open Open) {
	tests := []struct {
		name string
		f    func(t *testing.T, open Open)
	}{
		{"VacationCRUD", testVacationCRUD},
		{"Validation", testValidation},
		{"VersionBump", testVersionBump},
		{"Aliases", testAliases},
		{"Reserve", testReserve},
		{"ReserveAfterDelete", testReserveAfterDelete},
		{"ReserveRace", testReserveRace},
		{"TwoHandles", testTwoHandles},
		{"Claim", testClaim},
		{"RetryDone", testRetryDone},
		{"LeaseLost", testLeaseLost},
		{"Stamping", testStamping},
		{"Tokens", testTokens},
		{"Reopen", testReopen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.f(t, open) })
	}
}

// openClosed opens a store in dir that is closed when the test ends.
func openClosed(t *testing.T, open Open, dir string) store.Store {
	t.Helper()
	s := open(t, dir)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return s
}

func newStore(t *testing.T, open Open) store.Store {
	t.Helper()
	return openClosed(t, open, t.TempDir())
}

func put(t *testing.T, s store.Store, v store.Vacation) store.Vacation {
	t.Helper()
	got, err := s.PutVacation(context.Background(), v)
	if err != nil {
		t.Fatalf("PutVacation(%s) = %v", v.Address, err)
	}
	return got
}

func vacation(addr string) store.Vacation {
	return store.Vacation{
		Address:  addr,
		Subject:  "Away",
		Body:     "I am away until Monday.\nYours, " + addr + "\n",
		FromName: "Alice Example",
		TimeZone: "Europe/Berlin",
		Start:    t0,
		End:      t0.Add(14 * 24 * time.Hour),
		Updated:  t0,
	}
}

func diffVacation(got, want store.Vacation) string {
	var d []string
	add := func(field string, g, w any) { d = append(d, fmt.Sprintf("%s = %v, want %v", field, g, w)) }
	if got.Address != want.Address {
		add("Address", got.Address, want.Address)
	}
	if !slices.Equal(got.Aliases, want.Aliases) {
		add("Aliases", got.Aliases, want.Aliases)
	}
	if got.Subject != want.Subject {
		add("Subject", got.Subject, want.Subject)
	}
	if got.Body != want.Body {
		add("Body", got.Body, want.Body)
	}
	if got.HTMLBody != want.HTMLBody {
		add("HTMLBody", got.HTMLBody, want.HTMLBody)
	}
	if got.FromName != want.FromName {
		add("FromName", got.FromName, want.FromName)
	}
	if !got.Start.Equal(want.Start) {
		add("Start", got.Start, want.Start)
	}
	if !got.End.Equal(want.End) {
		add("End", got.End, want.End)
	}
	if got.TimeZone != want.TimeZone {
		add("TimeZone", got.TimeZone, want.TimeZone)
	}
	if got.IntervalDays != want.IntervalDays {
		add("IntervalDays", got.IntervalDays, want.IntervalDays)
	}
	if got.Version != want.Version {
		add("Version", got.Version, want.Version)
	}
	if !got.Updated.Equal(want.Updated) {
		add("Updated", got.Updated, want.Updated)
	}
	return fmt.Sprint(d)
}

func sameVacation(got, want store.Vacation) bool { return diffVacation(got, want) == "[]" }

func testVacationCRUD(t *testing.T, open Open) {
	ctx := context.Background()
	s := newStore(t, open)

	if _, err := s.GetVacation(ctx, "alice@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetVacation(absent) = %v, want ErrNotFound", err)
	}
	if _, err := s.FindVacation(ctx, "alice@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("FindVacation(absent) = %v, want ErrNotFound", err)
	}
	if vs, err := s.ListVacations(ctx); err != nil || len(vs) != 0 {
		t.Fatalf("ListVacations(empty) = %v, %v; want none", vs, err)
	}
	if err := s.DeleteVacation(ctx, "alice@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteVacation(absent) = %v, want ErrNotFound", err)
	}

	in := vacation("alice@Example.COM")
	in.HTMLBody = "<p>I am away.</p>"
	in.Aliases = []string{"a.example@example.com"}
	want := in
	want.Address = "alice@example.com"
	want.IntervalDays = 7 // the default
	want.Version = 1
	got := put(t, s, in)
	if !sameVacation(got, want) {
		t.Errorf("PutVacation(new): %s", diffVacation(got, want))
	}
	for _, addr := range []string{"alice@example.com", "alice@EXAMPLE.com"} {
		got, err := s.GetVacation(ctx, addr)
		if err != nil || !sameVacation(got, want) {
			t.Errorf("GetVacation(%s) = %v: %s", addr, err, diffVacation(got, want))
		}
	}

	bob := vacation("bob@example.com")
	bob.Start, bob.End = time.Time{}, time.Time{} // open-ended
	bob.IntervalDays = 3
	wantBob := bob
	wantBob.Version = 1
	if got := put(t, s, bob); !sameVacation(got, wantBob) {
		t.Errorf("PutVacation(no window): %s", diffVacation(got, wantBob))
	}
	vs, err := s.ListVacations(ctx)
	if err != nil || len(vs) != 2 {
		t.Fatalf("ListVacations() = %d vacations, %v; want 2", len(vs), err)
	}
	if !sameVacation(vs[0], want) || !sameVacation(vs[1], wantBob) {
		t.Errorf("ListVacations() = %v, want alice then bob (by address)", vs)
	}

	if err := s.DeleteVacation(ctx, "alice@EXAMPLE.com"); err != nil {
		t.Fatalf("DeleteVacation(alice) = %v", err)
	}
	if _, err := s.GetVacation(ctx, "alice@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetVacation(deleted) = %v, want ErrNotFound", err)
	}
	if _, err := s.FindVacation(ctx, "a.example@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("FindVacation(alias of deleted) = %v, want ErrNotFound", err)
	}
	if err := s.DeleteVacation(ctx, "alice@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteVacation(deleted) = %v, want ErrNotFound", err)
	}
	if vs, err := s.ListVacations(ctx); err != nil || len(vs) != 1 || vs[0].Address != "bob@example.com" {
		t.Errorf("ListVacations() after delete = %v, %v; want bob only", vs, err)
	}
}

func testValidation(t *testing.T, open Open) {
	ctx := context.Background()
	s := newStore(t, open)
	tests := []struct {
		name  string
		edit  func(v *store.Vacation)
		field string
	}{
		{"no at", func(v *store.Vacation) { v.Address = "alice" }, "address"},
		{"empty address", func(v *store.Vacation) { v.Address = "" }, "address"},
		{"empty domain", func(v *store.Vacation) { v.Address = "alice@" }, "address"},
		{"CRLF in address", func(v *store.Vacation) { v.Address = "alice@example.com\r\nBcc: x@y" }, "address"},
		{"alias no at", func(v *store.Vacation) { v.Aliases = []string{"alias"} }, "aliases"},
		{"negative interval", func(v *store.Vacation) { v.IntervalDays = -1 }, "interval_days"},
		{"end before start", func(v *store.Vacation) { v.End = v.Start.Add(-time.Hour) }, "end"},
		{"end at start", func(v *store.Vacation) { v.End = v.Start }, "end"},
		{"LF in subject", func(v *store.Vacation) { v.Subject = "Away\nBcc: x@y" }, "subject"},
		{"CR in from name", func(v *store.Vacation) { v.FromName = "Alice\r" }, "from_name"},
	}
	for _, tt := range tests {
		v := vacation("alice@example.com")
		tt.edit(&v)
		_, err := s.PutVacation(ctx, v)
		var ie *store.InvalidError
		if !errors.As(err, &ie) || ie.Field != tt.field {
			t.Errorf("PutVacation(%s) = %v, want an InvalidError for %s", tt.name, err, tt.field)
		}
	}
	if vs, err := s.ListVacations(ctx); err != nil || len(vs) != 0 {
		t.Errorf("ListVacations() after refused puts = %v, %v; want none", vs, err)
	}
	// Only a start, or only an end, is a window.
	v := vacation("alice@example.com")
	v.End = time.Time{}
	if _, err := s.PutVacation(ctx, v); err != nil {
		t.Errorf("PutVacation(start only) = %v", err)
	}
	v.Start, v.End = time.Time{}, t0
	if _, err := s.PutVacation(ctx, v); err != nil {
		t.Errorf("PutVacation(end only) = %v", err)
	}
}

func testVersionBump(t *testing.T, open Open) {
	s := newStore(t, open)
	v := vacation("alice@example.com")
	tests := []struct {
		name    string
		edit    func(v *store.Vacation)
		version int64
	}{
		{"first", func(v *store.Vacation) {}, 1},
		{"same again", func(v *store.Vacation) {}, 1},
		{"interval", func(v *store.Vacation) { v.IntervalDays = 2 }, 1},
		{"window", func(v *store.Vacation) { v.End = v.End.Add(24 * time.Hour) }, 1},
		{"from name", func(v *store.Vacation) { v.FromName = "A. Example" }, 1},
		{"aliases", func(v *store.Vacation) { v.Aliases = []string{"ae@example.com"} }, 1},
		{"time zone", func(v *store.Vacation) { v.TimeZone = "UTC" }, 1},
		{"subject", func(v *store.Vacation) { v.Subject = "Out of office" }, 2},
		{"body", func(v *store.Vacation) { v.Body = "Back soon." }, 3},
		{"html body", func(v *store.Vacation) { v.HTMLBody = "<p>Back soon.</p>" }, 4},
		{"html body removed", func(v *store.Vacation) { v.HTMLBody = "" }, 5},
		{"all text at once", func(v *store.Vacation) { v.Subject, v.Body = "x", "y" }, 6},
		{"nothing", func(v *store.Vacation) {}, 6},
	}
	for i, tt := range tests {
		tt.edit(&v)
		v.Updated = t0.Add(time.Duration(i) * time.Minute)
		got := put(t, s, v)
		if got.Version != tt.version {
			t.Errorf("PutVacation(%s).Version = %d, want %d", tt.name, got.Version, tt.version)
		}
		if !got.Updated.Equal(v.Updated) {
			t.Errorf("PutVacation(%s).Updated = %v, want %v", tt.name, got.Updated, v.Updated)
		}
		stored, err := s.GetVacation(context.Background(), v.Address)
		if err != nil || !sameVacation(stored, got) {
			t.Errorf("GetVacation after %s = %v: %s", tt.name, err, diffVacation(stored, got))
		}
	}
}

func testAliases(t *testing.T, open Open) {
	ctx := context.Background()
	s := newStore(t, open)

	alice := vacation("alice@example.com")
	alice.Aliases = []string{"Alice.Smith@Example.COM", "alice@EXAMPLE.org", "alice@example.org", "alice@Example.com"}
	got := put(t, s, alice)
	// Key form, duplicates and the address itself dropped, order kept.
	wantAliases := []string{"alice.smith@example.com", "alice@example.org"}
	if !slices.Equal(got.Aliases, wantAliases) {
		t.Errorf("PutVacation().Aliases = %q, want %q", got.Aliases, wantAliases)
	}

	for _, tt := range []struct {
		rcpt  string
		found bool
	}{
		{"alice@example.com", true},
		{"alice@EXAMPLE.COM", true},
		{"Alice.Smith@example.com", true},
		{"Alice.Smith@EXAMPLE.com", true},
		{"alice@example.org", true},
		{"alice@Example.Org", true},
		// Local parts compare without case too (see store.Key).
		{"alice.smith@example.com", true},
		{"ALICE@example.com", true},
		{"alice@example.net", false},
		{"alice", false},
		{"", false},
	} {
		v, err := s.FindVacation(ctx, tt.rcpt)
		switch {
		case tt.found && (err != nil || v.Address != "alice@example.com"):
			t.Errorf("FindVacation(%q) = %q, %v; want alice@example.com", tt.rcpt, v.Address, err)
		case tt.found && !slices.Equal(v.Aliases, wantAliases):
			t.Errorf("FindVacation(%q).Aliases = %q, want %q", tt.rcpt, v.Aliases, wantAliases)
		case !tt.found && !errors.Is(err, store.ErrNotFound):
			t.Errorf("FindVacation(%q) = %q, %v; want ErrNotFound", tt.rcpt, v.Address, err)
		}
	}

	// No address may name two users.
	for _, tt := range []struct {
		name string
		v    store.Vacation
	}{
		{"alias is another's alias", store.Vacation{Address: "bob@example.com", Aliases: []string{"alice@EXAMPLE.ORG"}}},
		{"alias is another's address", store.Vacation{Address: "bob@example.com", Aliases: []string{"alice@example.com"}}},
		{"address is another's alias", store.Vacation{Address: "Alice.Smith@example.com"}},
	} {
		tt.v.Body, tt.v.Updated = "away", t0
		if _, err := s.PutVacation(ctx, tt.v); !errors.Is(err, store.ErrAddressTaken) {
			t.Errorf("PutVacation(%s) = %v, want ErrAddressTaken", tt.name, err)
		}
	}
	// A refused put changes nothing.
	if _, err := s.GetVacation(ctx, "bob@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetVacation(bob) after refused puts = %v, want ErrNotFound", err)
	}
	if vs, err := s.ListVacations(ctx); err != nil || len(vs) != 1 {
		t.Errorf("ListVacations() after refused puts = %d vacations, %v; want 1", len(vs), err)
	}

	// Alice gives an alias up; then Bob may take it.
	alice.Aliases = []string{"Alice.Smith@example.com"}
	put(t, s, alice)
	bob := vacation("bob@example.com")
	bob.Aliases = []string{"alice@example.org"}
	put(t, s, bob)
	for rcpt, want := range map[string]string{
		"alice@example.org":       "bob@example.com",
		"Alice.Smith@example.com": "alice@example.com",
		"bob@example.com":         "bob@example.com",
	} {
		if v, err := s.FindVacation(ctx, rcpt); err != nil || v.Address != want {
			t.Errorf("FindVacation(%s) = %q, %v; want %s", rcpt, v.Address, err, want)
		}
	}
	// Clearing Bob frees his names.
	if err := s.DeleteVacation(ctx, "bob@example.com"); err != nil {
		t.Fatalf("DeleteVacation(bob) = %v", err)
	}
	alice.Aliases = []string{"alice@example.org", "bob@example.com"}
	if got := put(t, s, alice); !slices.Equal(got.Aliases, alice.Aliases) {
		t.Errorf("PutVacation(alice takes bob's names).Aliases = %q, want %q", got.Aliases, alice.Aliases)
	}
}

func reply(s string) store.Reply {
	return store.Reply{Message: []byte("Subject: Auto: " + s + "\r\n\r\nAway.\r\n")}
}

func reserve(t *testing.T, s store.Store, r store.Reservation) bool {
	t.Helper()
	ok, err := s.ReserveAndEnqueue(context.Background(), r, reply(r.Sender))
	if err != nil {
		t.Fatalf("ReserveAndEnqueue(%s, %s, v%d, %v) = %v", r.User, r.Sender, r.Version, r.Now, err)
	}
	return ok
}

func outboxLen(t *testing.T, s store.Store) int {
	t.Helper()
	n, err := s.OutboxLen(context.Background())
	if err != nil {
		t.Fatalf("OutboxLen() = %v", err)
	}
	return n
}

func testReserve(t *testing.T, open Open) {
	s := newStore(t, open)
	base := store.Reservation{User: "alice@example.com", Sender: "bob@example.org", Version: 1, Interval: week, Now: t0}
	steps := []struct {
		name   string
		edit   func(r *store.Reservation)
		want   bool
		outbox int
	}{
		{"first", func(r *store.Reservation) {}, true, 1},
		{"again at once", func(r *store.Reservation) {}, false, 1},
		{"an hour later", func(r *store.Reservation) { r.Now = t0.Add(time.Hour) }, false, 1},
		{"sender domain in capitals", func(r *store.Reservation) { r.Sender = "bob@EXAMPLE.ORG" }, false, 1},
		{"user domain in capitals", func(r *store.Reservation) { r.User = "alice@Example.Com" }, false, 1},
		{"just before the interval ends", func(r *store.Reservation) { r.Now = t0.Add(week - time.Millisecond) }, false, 1},
		{"other sender", func(r *store.Reservation) { r.Sender = "carol@example.org" }, true, 2},
		{"other user", func(r *store.Reservation) { r.User = "dave@example.com" }, true, 3},
		{"other sender again", func(r *store.Reservation) { r.Sender = "carol@example.org" }, false, 3},
		{"when the interval ends", func(r *store.Reservation) { r.Now = t0.Add(week) }, true, 4},
		{"after that", func(r *store.Reservation) { r.Now = t0.Add(week + time.Hour) }, false, 4},
		{"new text", func(r *store.Reservation) { r.Now, r.Version = t0.Add(week+time.Hour), 2 }, true, 5},
		{"new text again", func(r *store.Reservation) { r.Now, r.Version = t0.Add(week+2*time.Hour), 2 }, false, 5},
		// A shorter interval counts from the next reply: the stored
		// period still runs to its end.
		{"shorter interval", func(r *store.Reservation) {
			r.Now, r.Version, r.Interval = t0.Add(week+3*time.Hour), 2, time.Hour
		}, false, 5},
		// Versions only grow (PutVacation bumps them); a lower one is an
		// Offer that read the text just before it changed, and it must
		// not take the new text's period over.
		{"a stale reader of the old text", func(r *store.Reservation) { r.Now, r.Version = t0.Add(week+3*time.Hour), 1 }, false, 5},
	}
	for _, st := range steps {
		r := base
		st.edit(&r)
		if got := reserve(t, s, r); got != st.want {
			t.Errorf("ReserveAndEnqueue(%s) = %v, want %v", st.name, got, st.want)
		}
		if n := outboxLen(t, s); n != st.outbox {
			t.Errorf("OutboxLen() after %s = %d, want %d", st.name, n, st.outbox)
		}
	}

	// What was queued is what was given, with the defaults filled in.
	ctx := context.Background()
	r := store.Reservation{User: "erin@example.com", Sender: "Frank@Example.NET", Version: 1, Interval: week, Now: t0.Add(time.Minute)}
	if ok, err := s.ReserveAndEnqueue(ctx, r, reply("hello")); !ok || err != nil {
		t.Fatalf("ReserveAndEnqueue(erin) = %v, %v; want true", ok, err)
	}
	got, err := s.Claim(ctx, t0.Add(10*week), time.Minute, 100)
	if err != nil || len(got) != 6 {
		t.Fatalf("Claim(all) = %d replies, %v; want 6", len(got), err)
	}
	i := slices.IndexFunc(got, func(r store.Reply) bool { return r.User == "erin@example.com" })
	if i < 0 {
		t.Fatalf("Claim(all) has no reply of erin: %v", got)
	}
	e := got[i]
	if e.Rcpt != "Frank@Example.NET" || e.MailFrom != "" || string(e.Message) != string(reply("hello").Message) ||
		e.Attempts != 0 || e.LastError != "" || !e.NextTry.Equal(r.Now) || !e.Created.Equal(r.Now) {
		t.Errorf("queued reply = %+v, want rcpt Frank@Example.NET, <>, the message, due and created at %v", e, r.Now)
	}

	// Refused without touching the log.
	for _, bad := range []store.Reservation{
		{User: "alice@example.com", Sender: "", Version: 1, Interval: week, Now: t0},
		{User: "alice@example.com", Sender: "zed@example.org", Version: 1, Interval: 0, Now: t0},
	} {
		if ok, err := s.ReserveAndEnqueue(ctx, bad, reply("x")); ok || err == nil {
			t.Errorf("ReserveAndEnqueue(%+v) = %v, %v; want an error", bad, ok, err)
		}
	}
	if ok, err := s.ReserveAndEnqueue(ctx, base, store.Reply{}); ok || err == nil {
		t.Errorf("ReserveAndEnqueue(empty message) = %v, %v; want an error", ok, err)
	}
}

// Clearing a vacation ends its periods: set again (even with Version 1
// again), it answers at once.
func testReserveAfterDelete(t *testing.T, open Open) {
	ctx := context.Background()
	s := newStore(t, open)
	v := put(t, s, vacation("alice@example.com"))
	r := store.Reservation{User: v.Address, Sender: "bob@example.org", Version: v.Version, Interval: week, Now: t0}
	if !reserve(t, s, r) {
		t.Fatalf("ReserveAndEnqueue(first) = false")
	}
	if err := s.DeleteVacation(ctx, v.Address); err != nil {
		t.Fatalf("DeleteVacation() = %v", err)
	}
	nv := vacation("alice@example.com")
	nv.Subject = "Away again"
	v = put(t, s, nv)
	if v.Version != 1 {
		t.Errorf("PutVacation(after delete).Version = %d, want 1", v.Version)
	}
	r.Now, r.Version = t0.Add(time.Hour), v.Version
	if !reserve(t, s, r) {
		t.Errorf("ReserveAndEnqueue(after delete and set) = false, want true")
	}
	if n := outboxLen(t, s); n != 2 {
		t.Errorf("OutboxLen() = %d, want 2 (queued replies outlive the vacation)", n)
	}
}

// race runs n ReserveAndEnqueue calls for one (user, sender) at once,
// the i-th on stores[i%len(stores)], and returns how many reserved.
func race(t *testing.T, n int, stores ...store.Store) int {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		won   int
		start = make(chan struct{})
	)
	r := store.Reservation{User: "alice@example.com", Sender: "bob@example.org", Version: 1, Interval: week, Now: t0}
	for i := range n {
		s := stores[i%len(stores)]
		wg.Go(func() {
			<-start
			ok, err := s.ReserveAndEnqueue(context.Background(), r, reply(fmt.Sprint(i)))
			if err != nil {
				t.Errorf("ReserveAndEnqueue(racer %d) = %v", i, err)
			}
			if ok {
				mu.Lock()
				won++
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	return won
}

func testReserveRace(t *testing.T, open Open) {
	s := newStore(t, open)
	if won := race(t, 20, s); won != 1 {
		t.Errorf("20 racing ReserveAndEnqueue: %d reserved, want 1", won)
	}
	if n := outboxLen(t, s); n != 1 {
		t.Errorf("OutboxLen() after the race = %d, want 1", n)
	}
}

// Two handles on one database stand for two processes (or two MTAs
// sharing PostgreSQL): one reply, and no reply claimed twice.
func testTwoHandles(t *testing.T, open Open) {
	ctx := context.Background()
	dir := t.TempDir()
	a, b := openClosed(t, open, dir), openClosed(t, open, dir)
	if won := race(t, 20, a, b); won != 1 {
		t.Errorf("20 ReserveAndEnqueue racing over two handles: %d reserved, want 1", won)
	}
	if n := outboxLen(t, b); n != 1 {
		t.Errorf("OutboxLen() after the race = %d, want 1", n)
	}
	put(t, a, vacation("carol@example.com"))
	if _, err := b.GetVacation(ctx, "carol@example.com"); err != nil {
		t.Errorf("GetVacation() on the other handle = %v", err)
	}

	// Writers on both handles at once wait for each other; none fails
	// (PutVacation reads before it writes: a lock taken late would).
	var wg sync.WaitGroup
	for i := range 20 {
		s := []store.Store{a, b}[i%2]
		wg.Go(func() {
			v := vacation(fmt.Sprintf("u%d@example.com", i%5))
			v.Aliases = []string{fmt.Sprintf("alias%d@example.com", i%5)}
			v.Subject = fmt.Sprint("text ", i)
			if _, err := s.PutVacation(ctx, v); err != nil {
				t.Errorf("PutVacation(%s) racing on two handles = %v", v.Address, err)
			}
			if err := s.SetStampAll(ctx, v.Address, i%2 == 0); err != nil {
				t.Errorf("SetStampAll(%s) racing on two handles = %v", v.Address, err)
			}
		})
	}
	wg.Wait()
	if vs, err := b.ListVacations(ctx); err != nil || len(vs) != 6 {
		t.Errorf("ListVacations() after racing puts = %d vacations, %v; want 6", len(vs), err)
	}

	const replies = 40
	for i := range replies - 1 {
		r := store.Reservation{User: "carol@example.com", Sender: fmt.Sprintf("s%d@example.org", i), Version: 1, Interval: week, Now: t0}
		if !reserve(t, []store.Store{a, b}[i%2], r) {
			t.Fatalf("ReserveAndEnqueue(%s) = false", r.Sender)
		}
	}
	var (
		mu     sync.Mutex
		counts = map[int64]int{}
	)
	for i := range 4 {
		s := []store.Store{a, b}[i%2]
		wg.Go(func() {
			// Bounded, so that a store that ignores leases fails
			// rather than hangs.
			for range replies {
				got, err := s.Claim(ctx, t0, time.Hour, 3)
				if err != nil {
					t.Errorf("Claim() = %v", err)
					return
				}
				if len(got) > 3 {
					t.Errorf("Claim(max 3) = %d replies", len(got))
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, r := range got {
					counts[r.ID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(counts) != replies {
		t.Errorf("concurrent claimers got %d replies, want %d", len(counts), replies)
	}
	for id, n := range counts {
		if n != 1 {
			t.Errorf("reply %d claimed %d times within its lease, want once", id, n)
		}
	}
}

func ids(rs []store.Reply) []int64 {
	var out []int64
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

func claim(t *testing.T, s store.Store, now time.Time, lease time.Duration, max int) []store.Reply {
	t.Helper()
	got, err := s.Claim(context.Background(), now, lease, max)
	if err != nil {
		t.Fatalf("Claim(%v, %v, %d) = %v", now, lease, max, err)
	}
	return got
}

func testClaim(t *testing.T, open Open) {
	ctx := context.Background()
	s := newStore(t, open)
	if got := claim(t, s, t0, time.Minute, 10); len(got) != 0 {
		t.Fatalf("Claim(empty outbox) = %v", got)
	}
	// Five due at t0 (queued in order), one due in an hour.
	for i := range 5 {
		r := store.Reservation{User: "alice@example.com", Sender: fmt.Sprintf("s%d@example.org", i), Version: 1, Interval: week, Now: t0.Add(time.Duration(i-5) * time.Second)}
		reserve(t, s, r)
	}
	later := reply("later")
	later.NextTry = t0.Add(time.Hour)
	r := store.Reservation{User: "alice@example.com", Sender: "later@example.org", Version: 1, Interval: week, Now: t0}
	if ok, err := s.ReserveAndEnqueue(ctx, r, later); !ok || err != nil {
		t.Fatalf("ReserveAndEnqueue(later) = %v, %v", ok, err)
	}

	first := claim(t, s, t0, time.Minute, 3)
	if len(first) != 3 {
		t.Fatalf("Claim(max 3) = %d replies, want 3", len(first))
	}
	for i, r := range first {
		if want := fmt.Sprintf("s%d@example.org", i); r.Rcpt != want {
			t.Errorf("Claim(max 3)[%d].Rcpt = %s, want %s (oldest due first)", i, r.Rcpt, want)
		}
	}
	rest := claim(t, s, t0, time.Minute, 10)
	if len(rest) != 2 {
		t.Fatalf("Claim(again) = %d replies, want the other 2 due", len(rest))
	}
	for _, r := range rest {
		if slices.Contains(ids(first), r.ID) {
			t.Errorf("Claim(again) returned leased reply %d", r.ID)
		}
	}
	if got := claim(t, s, t0.Add(time.Minute-time.Millisecond), time.Minute, 10); len(got) != 0 {
		t.Errorf("Claim(before the leases end) = %v, want none", ids(got))
	}
	if n := outboxLen(t, s); n != 6 {
		t.Errorf("OutboxLen() with leases = %d, want 6 (leased replies are still queued)", n)
	}
	// The leases end at t0+1m: all five come back, with a new lease.
	again := claim(t, s, t0.Add(time.Minute), 10*time.Minute, 10)
	if !slices.Equal(ids(again), append(ids(first), ids(rest)...)) {
		t.Errorf("Claim(when leases end) = %v, want %v", ids(again), append(ids(first), ids(rest)...))
	}
	// At t0+1h the late one is due, the others leased until t0+11m are not leased any more.
	all := claim(t, s, t0.Add(time.Hour), time.Minute, 10)
	if len(all) != 6 || all[len(all)-1].Rcpt != "later@example.org" {
		t.Errorf("Claim(t0+1h) = %d replies ending with %v, want 6 ending with later@example.org", len(all), all)
	}
	if got := claim(t, s, t0.Add(2*time.Hour), time.Minute, 0); len(got) != 0 {
		t.Errorf("Claim(max 0) = %v, want none", ids(got))
	}
}

func testRetryDone(t *testing.T, open Open) {
	ctx := context.Background()
	s := newStore(t, open)
	for i := range 2 {
		reserve(t, s, store.Reservation{User: "alice@example.com", Sender: fmt.Sprintf("s%d@example.org", i), Version: 1, Interval: week, Now: t0})
	}
	got := claim(t, s, t0, time.Hour, 10)
	if len(got) != 2 {
		t.Fatalf("Claim() = %d replies, want 2", len(got))
	}
	a, b := got[0], got[1]

	// Retry ends the lease: due at next, not at the lease's end.
	if err := s.Retry(ctx, a.ID, a.Claim, t0.Add(5*time.Minute), "451 4.3.0 try later"); err != nil {
		t.Fatalf("Retry() = %v", err)
	}
	if got := claim(t, s, t0.Add(5*time.Minute-time.Millisecond), time.Hour, 10); len(got) != 0 {
		t.Errorf("Claim(before next) = %v, want none", ids(got))
	}
	got = claim(t, s, t0.Add(5*time.Minute), time.Hour, 10)
	if len(got) != 1 || got[0].ID != a.ID {
		t.Fatalf("Claim(at next) = %v, want [%d]", ids(got), a.ID)
	}
	if got[0].Attempts != 1 || got[0].LastError != "451 4.3.0 try later" || !got[0].NextTry.Equal(t0.Add(5*time.Minute)) {
		t.Errorf("retried reply = attempts %d, last error %q, next %v; want 1, the error, t0+5m", got[0].Attempts, got[0].LastError, got[0].NextTry)
	}
	if err := s.Retry(ctx, a.ID, got[0].Claim, t0.Add(6*time.Minute), "timeout"); err != nil {
		t.Fatalf("Retry(second) = %v", err)
	}
	got = claim(t, s, t0.Add(6*time.Minute), time.Hour, 10)
	if len(got) != 1 || got[0].Attempts != 2 || got[0].LastError != "timeout" {
		t.Fatalf("twice retried reply = %+v, want attempts 2, last error timeout", got)
	}
	a = got[0]

	if err := s.Done(ctx, b.ID, b.Claim); err != nil {
		t.Fatalf("Done() = %v", err)
	}
	if n := outboxLen(t, s); n != 1 {
		t.Errorf("OutboxLen() after Done = %d, want 1", n)
	}
	if err := s.Done(ctx, b.ID, b.Claim); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Done(done) = %v, want ErrNotFound", err)
	}
	if err := s.Retry(ctx, b.ID, b.Claim, t0, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Retry(done) = %v, want ErrNotFound", err)
	}
	if err := s.Done(ctx, a.ID, a.Claim); err != nil {
		t.Fatalf("Done() = %v", err)
	}
	if n := outboxLen(t, s); n != 0 {
		t.Errorf("OutboxLen() after all Done = %d, want 0", n)
	}
	if got := claim(t, s, t0.Add(week), time.Hour, 10); len(got) != 0 {
		t.Errorf("Claim(after all Done) = %v, want none", ids(got))
	}
}

// testLeaseLost: a claimer whose lease ran out (a process paused, or cut
// off from the database) comes back after another has claimed the
// reply. Its Done and Retry must leave the reply to the new claimer: a
// late Done would let the new claimer's outcome go unrecorded, a late
// Retry would make the reply due again while it is being sent.
func testLeaseLost(t *testing.T, open Open) {
	ctx := context.Background()
	dir := t.TempDir()
	a, b := openClosed(t, open, dir), openClosed(t, open, dir) // two instances
	for i := range 2 {
		reserve(t, a, store.Reservation{User: "alice@example.com", Sender: fmt.Sprintf("s%d@example.org", i), Version: 1, Interval: week, Now: t0})
	}
	old := claim(t, a, t0, time.Minute, 10)
	if len(old) != 2 {
		t.Fatalf("Claim() = %d replies, want 2", len(old))
	}
	// A's leases end; B claims both.
	taken := claim(t, b, t0.Add(time.Minute), time.Minute, 10)
	if len(taken) != 2 {
		t.Fatalf("Claim(after the leases end) = %d replies, want 2", len(taken))
	}
	for i := range taken {
		if taken[i].Claim <= old[i].Claim {
			t.Errorf("Claim(again).Claim = %d, want more than the first claim's %d", taken[i].Claim, old[i].Claim)
		}
	}
	if err := a.Done(ctx, old[0].ID, old[0].Claim); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("Done(lost lease) = %v, want ErrLeaseLost", err)
	}
	if err := a.Retry(ctx, old[1].ID, old[1].Claim, t0, "451 late"); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("Retry(lost lease) = %v, want ErrLeaseLost", err)
	}
	if n := outboxLen(t, a); n != 2 {
		t.Errorf("OutboxLen() after late Done = %d, want 2 (the reply is B's now)", n)
	}
	// The late Retry did not end B's lease: nobody may claim them yet.
	if got := claim(t, a, t0.Add(time.Minute+time.Second), time.Minute, 10); len(got) != 0 {
		t.Errorf("Claim(during B's lease, after A's late Retry) = %v, want none", ids(got))
	}
	// B finishes both with its own claims.
	if err := b.Retry(ctx, taken[1].ID, taken[1].Claim, t0.Add(time.Hour), "451 B"); err != nil {
		t.Errorf("Retry(current claim) = %v", err)
	}
	if err := b.Done(ctx, taken[0].ID, taken[0].Claim); err != nil {
		t.Errorf("Done(current claim) = %v", err)
	}
	if err := a.Done(ctx, old[0].ID, old[0].Claim); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Done(lost lease, reply done) = %v, want ErrNotFound", err)
	}
	got := claim(t, a, t0.Add(time.Hour), time.Minute, 10)
	if len(got) != 1 || got[0].Attempts != 1 || got[0].LastError != "451 B" {
		t.Fatalf("Claim(retried by B) = %+v, want one reply, attempts 1, B's error", got)
	}
	// Done reads no clock: what counts is whether anyone claimed the
	// reply since, so a lease that ran out unclaimed still finishes it.
	if err := a.Done(ctx, got[0].ID, got[0].Claim); err != nil {
		t.Errorf("Done(newest claim) = %v, want nil", err)
	}
	if n := outboxLen(t, a); n != 0 {
		t.Errorf("OutboxLen() at the end = %d, want 0", n)
	}
}

func testStamping(t *testing.T, open Open) {
	ctx := context.Background()
	s := newStore(t, open)
	stamp := func(addr string) bool {
		t.Helper()
		on, err := s.StampAll(ctx, addr)
		if err != nil {
			t.Fatalf("StampAll(%s) = %v", addr, err)
		}
		return on
	}
	if stamp("alice@example.com") {
		t.Errorf("StampAll(never set) = true")
	}
	if err := s.SetStampAll(ctx, "alice@Example.COM", true); err != nil {
		t.Fatalf("SetStampAll(true) = %v", err)
	}
	if !stamp("alice@example.com") || !stamp("alice@EXAMPLE.com") {
		t.Errorf("StampAll(set, either case of domain) = false")
	}
	if stamp("bob@example.com") {
		t.Errorf("StampAll(other user) = true")
	}
	if err := s.SetStampAll(ctx, "carol@example.com", false); err != nil {
		t.Fatal(err)
	}
	if got, err := s.StampAllSenders(ctx); err != nil || !slices.Equal(got, []string{"alice@example.com"}) {
		t.Errorf("StampAllSenders() = %q, %v; want [alice@example.com]", got, err)
	}
	if err := s.SetStampAll(ctx, "alice@example.com", true); err != nil {
		t.Fatalf("SetStampAll(true again) = %v", err)
	}
	if err := s.SetStampAll(ctx, "alice@example.com", false); err != nil {
		t.Fatalf("SetStampAll(false) = %v", err)
	}
	if stamp("alice@example.com") {
		t.Errorf("StampAll(set false) = true")
	}
	if err := s.SetStampAll(ctx, "nobody", true); err == nil {
		t.Errorf("SetStampAll(no @) = nil, want an error")
	}
}

func testReopen(t *testing.T, open Open) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	v := vacation("alice@example.com")
	v.Aliases = []string{"a@example.org"}
	want := put(t, s, v)
	if err := s.SetStampAll(ctx, "robot@example.com", true); err != nil {
		t.Fatalf("SetStampAll() = %v", err)
	}
	r := store.Reservation{User: "alice@example.com", Sender: "bob@example.org", Version: 1, Interval: week, Now: t0}
	msg := reply("bytes \x00\xff kept")
	if ok, err := s.ReserveAndEnqueue(ctx, r, msg); !ok || err != nil {
		t.Fatalf("ReserveAndEnqueue() = %v, %v", ok, err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}

	s = openClosed(t, open, dir)
	if got, err := s.FindVacation(ctx, "a@EXAMPLE.org"); err != nil || !sameVacation(got, want) {
		t.Errorf("FindVacation() after reopen = %v: %s", err, diffVacation(got, want))
	}
	if on, err := s.StampAll(ctx, "robot@example.com"); !on || err != nil {
		t.Errorf("StampAll() after reopen = %v, %v; want true", on, err)
	}
	if reserve(t, s, r) {
		t.Errorf("ReserveAndEnqueue(same period) after reopen = true, want false")
	}
	got := claim(t, s, t0, time.Minute, 10)
	if len(got) != 1 || string(got[0].Message) != string(msg.Message) {
		t.Errorf("Claim() after reopen = %+v, want the one queued reply", got)
	}
}

func testTokens(t *testing.T, open Open) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openClosed(t, open, dir)
	if _, err := s.GetToken(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetToken(unknown) = %v, want ErrNotFound", err)
	}
	user := store.Token{ID: "u1", Name: "bugtracker", Hash: "aa", Addresses: []string{"Bob@Example.COM", "carol@example.com"}, Created: t0}
	admin := store.Token{ID: "a1", Name: "ops", Hash: "bb", Admin: true, Created: t0.Add(time.Second)}
	for _, tok := range []store.Token{user, admin} {
		if err := s.CreateToken(ctx, tok); err != nil {
			t.Fatalf("CreateToken(%s) = %v", tok.ID, err)
		}
	}
	if err := s.CreateToken(ctx, store.Token{ID: "u1", Name: "again", Hash: "cc", Created: t0}); err == nil {
		t.Errorf("CreateToken(duplicate id) = nil, want an error")
	}
	if err := s.CreateToken(ctx, store.Token{ID: "x", Name: "evil\r\nX: y", Hash: "dd", Created: t0}); err == nil {
		t.Errorf("CreateToken(CR LF in name) = nil, want an error")
	}
	// A second handle (another instance) sees the same tokens.
	s2 := openClosed(t, open, dir)
	got, err := s2.GetToken(ctx, "u1")
	if err != nil {
		t.Fatalf("GetToken(u1) = %v", err)
	}
	if got.Hash != "aa" || got.Admin || !slices.Equal(got.Addresses, []string{"bob@example.com", "carol@example.com"}) || !got.Created.Equal(t0) {
		t.Errorf("GetToken(u1) = %+v", got)
	}
	list, err := s2.ListTokens(ctx)
	if err != nil || len(list) != 2 || list[0].ID != "u1" || list[1].ID != "a1" || !list[1].Admin || list[1].Addresses != nil {
		t.Errorf("ListTokens() = %+v, %v", list, err)
	}
	if err := s2.DeleteToken(ctx, "u1"); err != nil {
		t.Fatalf("DeleteToken(u1) = %v", err)
	}
	if err := s.DeleteToken(ctx, "u1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteToken(u1 again) = %v, want ErrNotFound", err)
	}
	if _, err := s.GetToken(ctx, "u1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetToken(revoked) = %v, want ErrNotFound", err)
	}
}
