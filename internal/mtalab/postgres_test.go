package mtalab

import (
	"context"
	"database/sql"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// TestPostgresStopStart: the private cluster keeps its data and its port
// across Stop and Start, refuses connections while stopped, and
// recovers after a Crash.
func TestPostgresStopStart(t *testing.T) {
	t.Parallel()
	pg := StartPostgres(t)
	db, err := sql.Open("pgx", pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec := func(q string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := db.ExecContext(ctx, q)
		return err
	}
	if err := exec(`CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1)`); err != nil {
		t.Fatalf("create table: %v", err)
	}
	pg.Stop(t)
	if err := exec(`INSERT INTO t VALUES (2)`); err == nil {
		t.Fatalf("insert while stopped = nil, want an error")
	}
	pg.Start(t)
	if err := exec(`INSERT INTO t VALUES (2)`); err != nil {
		t.Fatalf("insert after Start: %v", err)
	}
	pg.Crash(t)
	pg.Start(t)
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM t`).Scan(&n); err != nil || n != 2 {
		t.Errorf("rows after Stop, Start, Crash, Start = %d, %v; want 2", n, err)
	}
}
