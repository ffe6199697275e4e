package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/replygate/replygate/vacation/store"
	"github.com/replygate/replygate/vacation/store/storetest"
)

func openSQLite(t *testing.T, dir string) store.Store {
	t.Helper()
	s, err := store.OpenSQLite(filepath.Join(dir, "replygate.db"))
	if err != nil {
		t.Fatalf("OpenSQLite() = %v", err)
	}
	return s
}

func TestSQLite(t *testing.T) {
	storetest.Run(t, openSQLite)
}

// Two handles on one file are two processes' worth of connections: many
// senders, each raced from both, get exactly one reply each.
func TestSQLiteTwoHandlesManySenders(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replygate.db")
	var handles [2]*store.SQLite
	for i := range handles {
		s, err := store.OpenSQLite(path)
		if err != nil {
			t.Fatalf("OpenSQLite(#%d) = %v", i, err)
		}
		defer s.Close()
		handles[i] = s
	}
	const senders, racers = 30, 4
	now := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		won   = map[string]int{}
		start = make(chan struct{})
	)
	for i := range senders * racers {
		s := handles[i%2]
		sender := fmt.Sprintf("s%d@example.org", i/racers)
		wg.Go(func() {
			<-start
			r := store.Reservation{User: "alice@example.com", Sender: sender, Version: 1, Interval: time.Hour, Now: now}
			ok, err := s.ReserveAndEnqueue(context.Background(), r, store.Reply{Message: []byte("x")})
			if err != nil {
				t.Errorf("ReserveAndEnqueue(%s) = %v", sender, err)
			}
			if ok {
				mu.Lock()
				won[sender]++
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	if len(won) != senders {
		t.Errorf("%d senders got a reservation, want %d", len(won), senders)
	}
	for sender, n := range won {
		if n != 1 {
			t.Errorf("sender %s reserved %d times, want once", sender, n)
		}
	}
	for i, s := range handles {
		if n, err := s.OutboxLen(context.Background()); n != senders || err != nil {
			t.Errorf("OutboxLen() on handle %d = %d, %v; want %d", i, n, err, senders)
		}
	}
}

func TestSQLiteFileMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "replygate.db")
	s, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatalf("OpenSQLite() = %v", err)
	}
	defer s.Close()
	if err := s.SetStampAll(context.Background(), "a@example.com", true); err != nil {
		t.Fatalf("SetStampAll() = %v", err)
	}
	for _, name := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Errorf("stat %s: %v", filepath.Base(name), err)
			continue
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("mode of %s = %v, want -rw-------", filepath.Base(name), m)
		}
	}
}

func TestSQLiteOpenErrors(t *testing.T) {
	dir := t.TempDir()
	for _, path := range []string{
		"",
		filepath.Join(dir, "no such dir", "replygate.db"),
		filepath.Join(dir, "what?.db"),
	} {
		if s, err := store.OpenSQLite(path); err == nil {
			s.Close()
			t.Errorf("OpenSQLite(%q) = nil error, want one", path)
		}
	}
}

func schemaVersions(t *testing.T, path string) []int {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT version FROM schema_version ORDER BY version`)
	if err != nil {
		t.Fatalf("read schema_version: %v", err)
	}
	defer rows.Close()
	var vs []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestSQLiteMigrations(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "replygate.db")
	known := store.SQLiteSchemaVersion()
	if known < 1 {
		t.Fatalf("SQLiteSchemaVersion() = %d, want >= 1", known)
	}
	var want []int
	for v := 1; v <= known; v++ {
		want = append(want, v)
	}

	s, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatalf("OpenSQLite(new) = %v", err)
	}
	if err := s.SetStampAll(ctx, "robot@example.com", true); err != nil {
		t.Fatalf("SetStampAll() = %v", err)
	}
	s.Close()
	if got := schemaVersions(t, path); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("schema_version after first open = %v, want %v", got, want)
	}

	// Opening again is a no-op.
	s, err = store.OpenSQLite(path)
	if err != nil {
		t.Fatalf("OpenSQLite(again) = %v", err)
	}
	if on, err := s.StampAll(ctx, "robot@example.com"); !on || err != nil {
		t.Errorf("StampAll() after reopen = %v, %v; want true", on, err)
	}
	s.Close()
	if got := schemaVersions(t, path); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("schema_version after second open = %v, want %v", got, want)
	}

	// A newer replygate migrated this file: refuse it, touch nothing.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_version (version, name) VALUES ($1, 'from_the_future')`, known+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err = store.OpenSQLite(path)
	if err == nil {
		s.Close()
		t.Fatalf("OpenSQLite(newer schema) = nil error, want ErrNewerSchema")
	}
	if !errors.Is(err, store.ErrNewerSchema) {
		t.Errorf("OpenSQLite(newer schema) = %v, want ErrNewerSchema", err)
	}
	if msg := err.Error(); !strings.Contains(msg, fmt.Sprint(known+1)) || !strings.Contains(msg, path) {
		t.Errorf("OpenSQLite(newer schema) error %q names neither the version %d nor the file", msg, known+1)
	}
	if got := schemaVersions(t, path); len(got) != known+1 {
		t.Errorf("schema_version after refusal = %v, want it untouched", got)
	}
}

func TestSQLitePruneReplyLog(t *testing.T) {
	ctx := context.Background()
	s, err := store.OpenSQLite(filepath.Join(t.TempDir(), "replygate.db"))
	if err != nil {
		t.Fatalf("OpenSQLite() = %v", err)
	}
	defer s.Close()
	now := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
	r := store.Reservation{User: "alice@example.com", Sender: "bob@example.org", Version: 1, Interval: time.Hour, Now: now}
	if ok, err := s.ReserveAndEnqueue(ctx, r, store.Reply{Message: []byte("x")}); !ok || err != nil {
		t.Fatalf("ReserveAndEnqueue() = %v, %v", ok, err)
	}
	if n, err := s.PruneReplyLog(ctx, now.Add(30*time.Minute)); n != 0 || err != nil {
		t.Errorf("PruneReplyLog(within the period) = %d, %v; want 0", n, err)
	}
	r.Now = now.Add(30 * time.Minute)
	if ok, err := s.ReserveAndEnqueue(ctx, r, store.Reply{Message: []byte("x")}); ok || err != nil {
		t.Errorf("ReserveAndEnqueue(within the period, after a prune) = %v, %v; want false", ok, err)
	}
	if n, err := s.PruneReplyLog(ctx, now.Add(time.Hour)); n != 1 || err != nil {
		t.Errorf("PruneReplyLog(period over) = %d, %v; want 1", n, err)
	}
	r.Now = now.Add(time.Hour)
	if ok, err := s.ReserveAndEnqueue(ctx, r, store.Reply{Message: []byte("x")}); !ok || err != nil {
		t.Errorf("ReserveAndEnqueue(after the period was pruned) = %v, %v; want true", ok, err)
	}
}
