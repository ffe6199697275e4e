package store_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for the tests' own connection

	"github.com/replygate/replygate/vacation/store"
	"github.com/replygate/replygate/vacation/store/storetest"
)

// pgDSN names the test server: the local PostgreSQL unless
// REPLYGATE_TEST_POSTGRES says otherwise.
func pgDSN() string {
	if dsn := os.Getenv("REPLYGATE_TEST_POSTGRES"); dsn != "" {
		return dsn
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// pgAdmin connects to the test server, skipping the test when there is
// none, or failing it under CI=true, where a missing server is a broken
// setup rather than a developer's laptop.
func pgAdmin(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", pgDSN())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err = db.PingContext(ctx)
		cancel()
		if err != nil {
			db.Close()
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL at %s: %v", pgDSN(), err)
		}
		t.Skipf("no PostgreSQL at %s (set REPLYGATE_TEST_POSTGRES): %v", pgDSN(), err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// withSearchPath returns dsn with the search_path runtime parameter set.
func withSearchPath(dsn, schema string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " search_path=" + schema
}

var (
	pgSchemasMu sync.Mutex
	pgSchemas   = map[string]bool{} // dir → schema created
)

// pgSchema returns the schema that stands for dir, creating it on first
// use and dropping it when t ends: each test directory a database of
// its own, as storetest.Open asks.
func pgSchema(t *testing.T, admin *sql.DB, dir string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(dir))
	schema := "rgtest_" + hex.EncodeToString(sum[:8])
	pgSchemasMu.Lock()
	defer pgSchemasMu.Unlock()
	if pgSchemas[dir] {
		return schema
	}
	ctx := context.Background()
	if _, err := admin.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`); err != nil {
		t.Fatalf("drop stale schema %s: %v", schema, err)
	}
	if _, err := admin.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatalf("create schema %s: %v", schema, err)
	}
	pgSchemas[dir] = true
	t.Cleanup(func() {
		pgSchemasMu.Lock()
		delete(pgSchemas, dir)
		pgSchemasMu.Unlock()
		if _, err := admin.ExecContext(context.Background(), `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

func openPostgres(t *testing.T, dir string) store.Store {
	t.Helper()
	return openPostgresHandle(t, dir)
}

func openPostgresHandle(t *testing.T, dir string) *store.Postgres {
	t.Helper()
	admin := pgAdmin(t)
	schema := pgSchema(t, admin, dir)
	s, err := store.OpenPostgres(context.Background(), withSearchPath(pgDSN(), schema))
	if err != nil {
		t.Fatalf("OpenPostgres(search_path=%s) = %v", schema, err)
	}
	return s
}

func TestPostgres(t *testing.T) {
	pgAdmin(t)
	storetest.Run(t, openPostgres)
}

// Two handles on one schema are two MTAs' replygates: 20 racers for one
// (user, sender), half on each, and exactly one reply.
func TestPostgresTwoHandlesRace(t *testing.T) {
	dir := t.TempDir()
	var handles [2]*store.Postgres
	for i := range handles {
		handles[i] = openPostgresHandle(t, dir)
		defer handles[i].Close()
	}
	now := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
	r := store.Reservation{User: "alice@example.com", Sender: "bob@example.org", Version: 1, Interval: time.Hour, Now: now}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		won   int
		start = make(chan struct{})
	)
	for i := range 20 {
		s := handles[i%2]
		wg.Go(func() {
			<-start
			ok, err := s.ReserveAndEnqueue(context.Background(), r, store.Reply{Message: []byte(fmt.Sprint(i))})
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
	if won != 1 {
		t.Errorf("20 ReserveAndEnqueue racing over two handles: %d reserved, want 1", won)
	}
	for i, s := range handles {
		if n, err := s.OutboxLen(context.Background()); n != 1 || err != nil {
			t.Errorf("OutboxLen() on handle %d = %d, %v; want 1", i, n, err)
		}
	}
}

// Instances starting together migrate once: the advisory lock makes the
// others wait and then find the schema current.
func TestPostgresConcurrentOpen(t *testing.T) {
	admin := pgAdmin(t)
	dir := t.TempDir()
	schema := pgSchema(t, admin, dir)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			s, err := store.OpenPostgres(context.Background(), withSearchPath(pgDSN(), schema))
			if err != nil {
				t.Errorf("OpenPostgres(#%d) = %v", i, err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
	var n, max int
	err := admin.QueryRow(`SELECT COUNT(*), MAX(version) FROM `+schema+`.schema_version`).Scan(&n, &max)
	if err != nil || n != store.PostgresSchemaVersion() || max != store.PostgresSchemaVersion() {
		t.Errorf("schema_version after 8 concurrent opens: %d rows up to %d, %v; want %d", n, max, err, store.PostgresSchemaVersion())
	}
}

func TestPostgresNewerSchema(t *testing.T) {
	admin := pgAdmin(t)
	dir := t.TempDir()
	s := openPostgresHandle(t, dir)
	s.Close()
	schema := pgSchema(t, admin, dir)
	newer := store.PostgresSchemaVersion() + 1
	if _, err := admin.Exec(`INSERT INTO `+schema+`.schema_version (version, name) VALUES ($1, 'from_the_future')`, newer); err != nil {
		t.Fatal(err)
	}
	s, err := store.OpenPostgres(context.Background(), withSearchPath(pgDSN(), schema))
	if err == nil {
		s.Close()
	}
	if !errors.Is(err, store.ErrNewerSchema) {
		t.Errorf("OpenPostgres(schema version %d) = %v, want ErrNewerSchema", newer, err)
	}
}

// What PostgreSQL cannot store as TEXT is refused as invalid, naming
// the field, not passed on as a server error.
func TestPostgresText(t *testing.T) {
	ctx := context.Background()
	s := openPostgresHandle(t, t.TempDir())
	defer s.Close()
	v := store.Vacation{Address: "alice@example.com", Body: "away\x00"}
	var ie *store.InvalidError
	if _, err := s.PutVacation(ctx, v); !errors.As(err, &ie) || ie.Field != "body" {
		t.Errorf("PutVacation(NUL in body) = %v, want an InvalidError for body", err)
	}
	v.Body = "away \xff"
	if _, err := s.PutVacation(ctx, v); !errors.As(err, &ie) || ie.Field != "body" {
		t.Errorf("PutVacation(invalid UTF-8 in body) = %v, want an InvalidError for body", err)
	}
	now := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
	r := store.Reservation{User: "alice@example.com", Sender: "b\xffb@example.org", Version: 1, Interval: time.Hour, Now: now}
	if _, err := s.ReserveAndEnqueue(ctx, r, store.Reply{Message: []byte("x")}); !errors.As(err, &ie) || ie.Field != "sender" {
		t.Errorf("ReserveAndEnqueue(invalid UTF-8 sender) = %v, want an InvalidError for sender", err)
	}
	r.Sender = "bob@example.org"
	if ok, err := s.ReserveAndEnqueue(ctx, r, store.Reply{Message: []byte("x")}); !ok || err != nil {
		t.Fatalf("ReserveAndEnqueue() = %v, %v", ok, err)
	}
	rs, err := s.Claim(ctx, now, time.Minute, 1)
	if err != nil || len(rs) != 1 {
		t.Fatalf("Claim() = %v, %v", rs, err)
	}
	if err := s.Retry(ctx, rs[0].ID, rs[0].Claim, now, "451 \xff\x00 later"); err != nil {
		t.Errorf("Retry(invalid UTF-8 in the error) = %v, want it stored", err)
	}
}
