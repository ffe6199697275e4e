package store

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
)

// A migration is one file NNN_name.sql, applied once, in order, to bring
// the schema from version NNN-1 to NNN. Files are never edited after they
// ship: a change is a new file.
type migration struct {
	version int
	name    string
	sql     string
}

var migrationName = regexp.MustCompile(`^([0-9]{3})_([a-z0-9_]+)\.sql$`)

// loadMigrations reads the .sql files at the top of fsys. Versions must
// run 1, 2, 3… with no gap or repeat, so a lost or doubled file stops
// the build's tests rather than a database.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	ents, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []migration
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration %s: name is not NNN_name.sql", e.Name())
		}
		b, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration: %w", err)
		}
		v, _ := strconv.Atoi(m[1])
		ms = append(ms, migration{version: v, name: m[2], sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %03d_%s: want version %d (versions run 1, 2, 3… without gaps)", m.version, m.name, i+1)
		}
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("no migrations")
	}
	return ms, nil
}

// migrate brings db to the newest schema of ms in one transaction (DDL
// is transactional in SQLite and PostgreSQL: a failed step leaves the
// database as it was). schema_version holds one row per applied
// migration. A database newer than ms is refused with ErrNewerSchema:
// its tables may mean something this binary does not know.
//
// The SQL is plain enough for PostgreSQL too, which must also hold a
// lock (pg_advisory_xact_lock) so that two instances starting at once do
// not both migrate; in SQLite the write transaction is that lock.
func migrate(ctx context.Context, db *sql.DB, ms []migration) (from, to int, err error) {
	return migrateLocked(ctx, db, ms, "")
}

// migrateLocked is migrate that first runs lock, if not empty, in the
// migration's transaction: PostgreSQL's pg_advisory_xact_lock, held
// until commit or rollback, so that a second instance reads
// schema_version only after the first has finished.
func migrateLocked(ctx context.Context, db *sql.DB, ms []migration, lock string) (from, to int, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, err
	}
	defer tx.Rollback()
	if lock != "" {
		if _, err := tx.ExecContext(ctx, lock); err != nil {
			return 0, 0, fmt.Errorf("lock for migrations: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
	version INTEGER NOT NULL PRIMARY KEY,
	name    TEXT    NOT NULL
)`); err != nil {
		return 0, 0, fmt.Errorf("create schema_version: %w", err)
	}
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&from); err != nil {
		return 0, 0, fmt.Errorf("read schema_version: %w", err)
	}
	known := len(ms)
	if from > known {
		return from, from, fmt.Errorf("%w: the database is at schema version %d and this replygate knows versions up to %d; run a newer replygate (or restore a backup)", ErrNewerSchema, from, known)
	}
	for _, m := range ms[from:] {
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return from, from, fmt.Errorf("migration %03d_%s: %w", m.version, m.name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
			return from, from, fmt.Errorf("migration %03d_%s: record version: %w", m.version, m.name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return from, from, fmt.Errorf("commit migrations: %w", err)
	}
	return from, known, nil
}
