package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // pure Go: CGO_ENABLED=0 builds keep working
)

//go:embed migrations/sqlite/*.sql
var sqliteMigrationFS embed.FS

var sqliteMigrations = sync.OnceValues(func() ([]migration, error) {
	sub, err := fs.Sub(sqliteMigrationFS, "migrations/sqlite")
	if err != nil {
		return nil, err
	}
	return loadMigrations(sub)
})

// SQLiteSchemaVersion is the newest schema this binary knows.
func SQLiteSchemaVersion() int {
	ms, err := sqliteMigrations()
	if err != nil {
		return 0
	}
	return len(ms)
}

// sqliteParams are applied by the driver to every connection it opens.
//
//   - _txlock=immediate: a write transaction takes the write lock at BEGIN
//     and waits for it under busy_timeout. A deferred one that reads and
//     then writes fails at once with SQLITE_BUSY when another connection
//     wrote in between, and no timeout helps with that.
//   - busy_timeout 5 s: another process (or handle) writing makes us wait,
//     not fail.
//   - WAL: readers never block the writer nor it them.
//   - synchronous=FULL: with WAL, NORMAL is safe against a crash of the
//     process but may lose the last commits on power loss. Those commits
//     are reservations and queued replies (a lost one is a reply never
//     sent) and Done (a lost one is a reply sent twice), at a rate of
//     replies, not messages; one fsync each is cheap for that promise.
//   - foreign_keys: aliases go with their vacation.
const sqliteParams = "?_txlock=immediate&_busy_timeout=5000&_journal_mode=WAL&_synchronous=FULL&_foreign_keys=1"

// SQLite is the embedded Store: one database file in the state
// directory. Several handles, in one process or several, may share the
// file; SQLite's locks keep them consistent.
type SQLite struct {
	db *sql.DB
	vacationReads
	// wsem lets one write transaction of this handle run at a time, so
	// this process's writers queue here rather than poll SQLite's busy
	// handler; other handles and processes still meet busy_timeout.
	wsem      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*SQLite)(nil)

// OpenSQLite opens the database at path, creating it (mode 0600) if need
// be, and brings its schema up to date. It refuses, with ErrNewerSchema,
// a database that a newer replygate has migrated. The directory must
// exist; it should be the daemon's private (0700) state directory.
func OpenSQLite(path string) (*SQLite, error) {
	if path == "" {
		return nil, errors.New("open store: empty path")
	}
	if strings.ContainsRune(path, '?') {
		// The driver would take what follows as parameters.
		return nil, fmt.Errorf("open store %s: path must not contain '?'", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// Create the file ourselves so that it is 0600 whatever the umask
	// allows; SQLite gives the -wal and -shm files the mode of the
	// database. An existing file keeps the mode its admin gave it.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	f.Close()

	db, err := sql.Open("sqlite", abs+sqliteParams)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &SQLite{db: db, wsem: make(chan struct{}, 1),
		vacationReads: vacationReads{db: db, order: vacationOrder, storable: func(string) bool { return true }}}
	if err := s.init(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

func (s *SQLite) init() error {
	ctx := context.Background()
	var mode string
	if err := s.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal_mode is %q, want wal (is the file on a network file system?)", mode)
	}
	ms, err := sqliteMigrations()
	if err != nil {
		return err
	}
	_, _, err = migrate(ctx, s.db, ms)
	return err
}

// Close closes the database. It may be called more than once.
func (s *SQLite) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.db.Close() })
	return s.closeErr
}

// write runs f in an IMMEDIATE transaction, one per handle at a time.
func (s *SQLite) write(ctx context.Context, f func(tx *sql.Tx) error) error {
	select {
	case s.wsem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.wsem }()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit()
}

func millis(t time.Time) int64 { return t.UnixMilli() }

func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

func nullMillis(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMilli(), Valid: true}
}

func fromNullMillis(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return fromMillis(n.Int64)
}

// The version starts at 1 and goes up by one when the text changes: in
// DO UPDATE SET, vacations.* are the stored values and excluded.* the new.
const putVacationSQL = `INSERT INTO vacations
	(address, subject, body, html_body, from_name, start_ms, end_ms, time_zone, interval_days, version, updated_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10)
ON CONFLICT (address) DO UPDATE SET
	subject = excluded.subject,
	body = excluded.body,
	html_body = excluded.html_body,
	from_name = excluded.from_name,
	start_ms = excluded.start_ms,
	end_ms = excluded.end_ms,
	time_zone = excluded.time_zone,
	interval_days = excluded.interval_days,
	version = CASE
		WHEN vacations.subject <> excluded.subject
			OR vacations.body <> excluded.body
			OR vacations.html_body <> excluded.html_body
		THEN vacations.version + 1
		ELSE vacations.version
	END,
	updated_ms = excluded.updated_ms
RETURNING version`

// PutVacation stores v (see Normalize for what is checked and how it is
// rewritten) and returns it as stored. Updated is v.Updated when the
// caller sets it (the daemon passes its clock), else the wall clock.
// An address or alias that already names another user's vacation is
// refused with ErrAddressTaken.
func (s *SQLite) PutVacation(ctx context.Context, v Vacation) (Vacation, error) {
	v, err := Normalize(v)
	if err != nil {
		return Vacation{}, err
	}
	if v.Updated.IsZero() {
		v.Updated = time.Now()
	}
	v.Updated = fromMillis(millis(v.Updated))
	err = s.write(ctx, func(tx *sql.Tx) error {
		names := append([]string{v.Address}, v.Aliases...)
		for i, n := range names {
			var owner string
			err := tx.QueryRowContext(ctx, `SELECT address FROM aliases WHERE alias = $1 AND address <> $2`, n, v.Address).Scan(&owner)
			if err == nil {
				field := "aliases"
				if i == 0 {
					field = "address"
				}
				return fmt.Errorf("%s: %s: %w", field, n, ErrAddressTaken)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		err := tx.QueryRowContext(ctx, putVacationSQL,
			v.Address, v.Subject, v.Body, v.HTMLBody, v.FromName,
			nullMillis(v.Start), nullMillis(v.End), v.TimeZone, v.IntervalDays,
			millis(v.Updated),
		).Scan(&v.Version)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM aliases WHERE address = $1`, v.Address); err != nil {
			return err
		}
		for pos, n := range names {
			if _, err := tx.ExecContext(ctx, `INSERT INTO aliases (alias, address, pos) VALUES ($1, $2, $3)`, n, v.Address, pos); err != nil {
				return err
			}
		}
		return nil
	})
	var inv *InvalidError
	switch {
	case errors.Is(err, ErrAddressTaken) || errors.As(err, &inv):
		return Vacation{}, err
	case err != nil:
		return Vacation{}, fmt.Errorf("put vacation %s: %w", v.Address, err)
	}
	return v, nil
}

const vacationOrder = ` ORDER BY v.address, a.pos`

// DeleteVacation removes the vacation of address with its aliases and
// its reply log, so that a vacation set again later starts afresh (its
// Version starts again at 1). Replies already queued stay queued.
func (s *SQLite) DeleteVacation(ctx context.Context, address string) error {
	key := Key(address)
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM vacations WHERE address = $1`, key)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return ErrNotFound
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM reply_log WHERE user_addr = $1`, key)
		return err
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete vacation %s: %w", address, err)
	}
	return err
}

// reserveSQL inserts the period, or takes over the stored one when it has
// expired or was for an older text (a caller that read the old text just
// before it changed cannot take the new period over); RETURNING yields a
// row exactly when the row was written, that is, when this caller holds
// the period.
const reserveSQL = `INSERT INTO reply_log (user_addr, sender, version, expires_ms)
VALUES ($1, $2, $3, $4)
ON CONFLICT (user_addr, sender) DO UPDATE SET
	version = excluded.version,
	expires_ms = excluded.expires_ms
WHERE reply_log.expires_ms <= $5 OR reply_log.version < excluded.version
RETURNING 1`

const enqueueSQL = `INSERT INTO outbox
	(user_addr, mail_from, rcpt, message, attempts, next_try_ms, lease_until_ms, last_error, created_ms)
VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8)`

// ReserveAndEnqueue implements Store. User and Sender are compared in
// Key form. reply.User and reply.Rcpt default to r.User and r.Sender,
// reply.NextTry and reply.Created to r.Now.
func (s *SQLite) ReserveAndEnqueue(ctx context.Context, r Reservation, reply Reply) (bool, error) {
	if err := checkReservation(r, reply); err != nil {
		return false, err
	}
	user, sender := Key(r.User), Key(r.Sender)
	if reply.User == "" {
		reply.User = r.User
	}
	if reply.Rcpt == "" {
		reply.Rcpt = r.Sender
	}
	if reply.NextTry.IsZero() {
		reply.NextTry = r.Now
	}
	if reply.Created.IsZero() {
		reply.Created = r.Now
	}
	var reserved bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, reserveSQL, user, sender, r.Version,
			millis(r.Now.Add(r.Interval)), millis(r.Now)).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		reserved = true
		_, err = tx.ExecContext(ctx, enqueueSQL, Key(reply.User), reply.MailFrom, reply.Rcpt,
			reply.Message, reply.Attempts, millis(reply.NextTry), reply.LastError, millis(reply.Created))
		return err
	})
	if err != nil {
		return false, fmt.Errorf("reserve reply %s to %s: %w", r.User, r.Sender, err)
	}
	return reserved, nil
}

func checkReservation(r Reservation, reply Reply) error {
	switch {
	case r.User == "":
		return invalid("user", "must not be empty")
	case r.Sender == "":
		return invalid("sender", "must not be empty") // <> gets no reply
	case r.Interval <= 0:
		return invalid("interval", "must be positive")
	case r.Now.IsZero():
		return invalid("now", "must be set")
	case len(reply.Message) == 0:
		return invalid("message", "must not be empty")
	}
	return nil
}

// PruneReplyLog deletes the reply periods that expired by now and
// reports how many. They decide nothing any more (an expired period is
// taken over by the next reservation), so this only bounds the table.
func (s *SQLite) PruneReplyLog(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM reply_log WHERE expires_ms <= $1`, millis(now))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune reply log: %w", err)
	}
	return n, nil
}

// claimSQL leases in one statement and numbers the claim. PostgreSQL
// adds FOR UPDATE SKIP LOCKED to the subquery so that claimers pass each
// other.
const claimSQL = `UPDATE outbox SET lease_until_ms = $1, claim = claim + 1
WHERE id IN (
	SELECT id FROM outbox
	WHERE next_try_ms <= $2 AND lease_until_ms <= $2
	ORDER BY next_try_ms, id
	LIMIT $3
)
RETURNING id, user_addr, mail_from, rcpt, message, attempts, next_try_ms, last_error, created_ms, claim`

// doneSQL and retrySQL finish one claim of a reply: they touch the row
// only while claim $2 is its newest.
const (
	doneSQL  = `DELETE FROM outbox WHERE id = $1 AND claim = $2`
	retrySQL = `UPDATE outbox
SET attempts = attempts + 1, next_try_ms = $3, last_error = $4, lease_until_ms = 0
WHERE id = $1 AND claim = $2`
)

// Claim implements Store; the replies come oldest due first.
func (s *SQLite) Claim(ctx context.Context, now time.Time, lease time.Duration, max int) ([]Reply, error) {
	if max <= 0 {
		return nil, nil
	}
	if lease <= 0 {
		return nil, invalid("lease", "must be positive")
	}
	var out []Reply
	err := s.write(ctx, func(tx *sql.Tx) error {
		out = out[:0]
		rows, err := tx.QueryContext(ctx, claimSQL, millis(now.Add(lease)), millis(now), max)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				r                Reply
				nextTry, created int64
			)
			if err := rows.Scan(&r.ID, &r.User, &r.MailFrom, &r.Rcpt, &r.Message, &r.Attempts,
				&nextTry, &r.LastError, &created, &r.Claim); err != nil {
				return err
			}
			r.NextTry, r.Created = fromMillis(nextTry), fromMillis(created)
			out = append(out, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("claim replies: %w", err)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].NextTry.Equal(out[j].NextTry) {
			return out[i].NextTry.Before(out[j].NextTry)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Done removes reply id if claim is its newest claim; ErrNotFound when
// it is not queued, ErrLeaseLost when it was claimed again.
func (s *SQLite) Done(ctx context.Context, id, claim int64) error {
	err := s.write(ctx, func(tx *sql.Tx) error { return finishClaim(ctx, tx, doneSQL, id, claim) })
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrLeaseLost) {
		return fmt.Errorf("done reply %d: %w", id, err)
	}
	return err
}

// Retry counts an attempt of reply id, records lastErr, ends its lease
// and makes it due at next, if claim is its newest claim; ErrNotFound
// when it is not queued, ErrLeaseLost when it was claimed again.
func (s *SQLite) Retry(ctx context.Context, id, claim int64, next time.Time, lastErr string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		return finishClaim(ctx, tx, retrySQL, id, claim, millis(next), lastErr)
	})
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrLeaseLost) {
		return fmt.Errorf("retry reply %d: %w", id, err)
	}
	return err
}

// OutboxLen counts queued replies, leased or not.
func (s *SQLite) OutboxLen(ctx context.Context) (int, error) { return outboxLen(ctx, s.db) }

// SetStampAll records whether all mail from address is to be stamped.
func (s *SQLite) SetStampAll(ctx context.Context, address string, on bool) error {
	if err := checkAddress("address", address); err != nil {
		return err
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO stamp_prefs (address, stamp_all) VALUES ($1, $2)
ON CONFLICT (address) DO UPDATE SET stamp_all = excluded.stamp_all`, Key(address), on)
		return err
	})
	if err != nil {
		return fmt.Errorf("set stamping %s: %w", address, err)
	}
	return nil
}

// StampAll reports whether all mail from address is to be stamped;
// false for an address never set.
func (s *SQLite) StampAll(ctx context.Context, address string) (bool, error) {
	var on bool
	err := s.db.QueryRowContext(ctx, `SELECT stamp_all FROM stamp_prefs WHERE address = $1`, Key(address)).Scan(&on)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("stamping %s: %w", address, err)
	}
	return on, nil
}

// StampAllSenders implements Store.
func (s *SQLite) StampAllSenders(ctx context.Context) ([]string, error) {
	return stampAllSenders(ctx, s.db, `ORDER BY address`)
}
