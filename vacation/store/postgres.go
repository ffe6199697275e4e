package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

//go:embed migrations/postgres/*.sql
var postgresMigrationFS embed.FS

var postgresMigrations = sync.OnceValues(func() ([]migration, error) {
	sub, err := fs.Sub(postgresMigrationFS, "migrations/postgres")
	if err != nil {
		return nil, err
	}
	return loadMigrations(sub)
})

// PostgresSchemaVersion is the newest PostgreSQL schema this binary knows.
func PostgresSchemaVersion() int {
	ms, err := postgresMigrations()
	if err != nil {
		return 0
	}
	return len(ms)
}

// migrateLockSQL serializes migrations of every replygate sharing the
// server: the lock is held until the migration commits or rolls back.
// The key is a constant (ASCII "rpgate" + 1), not derived from the
// schema, since current_schema() is NULL before the schema exists.
const migrateLockSQL = `SELECT pg_advisory_xact_lock(125779898021989)`

// Pool and timeouts. Queries are bounded by the caller's context (the
// milter's offer_timeout, the outbox's store timeout); these bound what
// the caller cannot see.
//
//   - connect: a server that does not answer fails a new connection, not
//     hangs it (a refused one fails at once);
//   - open connections: the statements are short, so 16 serve a burst of
//     milter sessions; several instances times 16 stays well under
//     PostgreSQL's default max_connections of 100;
//   - idle: a few stay for the next message; the rest, and any that sat
//     for minutes, are closed, so a pool left over from before an outage
//     is soon replaced by new connections;
//   - lifetime: connections are renewed, to follow a fail-over and to
//     give back server memory.
const (
	pgConnectTimeout  = 5 * time.Second
	pgMaxOpenConns    = 16
	pgMaxIdleConns    = 4
	pgConnMaxIdleTime = 5 * time.Minute
	pgConnMaxLifetime = 30 * time.Minute
	pgTxAttempts      = 3 // for deadlocks and serialization failures
)

// Postgres is the Store that several replygate instances (one per MTA)
// share. Every decision that must be made once is one statement or one
// transaction on the server, so instances need not know each other.
//
// It goes through database/sql (pgx's stdlib driver) rather than
// pgxpool: the versioned migrations then run through the same code as
// SQLite's, the statements and scans read like SQLite's, and
// database/sql's pool drops broken connections and dials anew, so the
// store recovers on its own when PostgreSQL comes back.
type Postgres struct {
	db *sql.DB
	vacationReads
	where string // postgres user@host:port/db, for errors
	// migrateDB is a pool of its own (one connection, none idle) that
	// the migrations run on, before db opens its first connection.
	migrateDB *sql.DB
	migrated  atomic.Bool
	migrating chan struct{} // one migration at a time: a semaphore
	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*Postgres)(nil)

// OpenPostgres connects to the PostgreSQL named by dsn (a URL
// postgres://user@host/db?... or key=value pairs, as libpq takes) and
// brings the schema up to date under an advisory lock, so that instances
// starting together migrate once. The tables live in the first schema of
// the connection's search_path (set it in the DSN, search_path=NAME, to
// keep them apart from others). It refuses, with ErrNewerSchema, a
// database that a newer replygate has migrated. A DSN without
// connect_timeout gets 5 s.
func OpenPostgres(ctx context.Context, dsn string) (*Postgres, error) {
	s, err := NewPostgres(dsn)
	if err != nil {
		return nil, err
	}
	if err := s.Ping(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// NewPostgres is OpenPostgres without connecting: it only checks dsn.
// The store connects when first used, and the first connection brings
// the schema up to date; until that succeeds every call fails with the
// reason (the server is unreachable, ErrNewerSchema, ...). A daemon uses
// it to start, and keep mail flowing, while PostgreSQL is down, and to
// recover by itself when it returns: nothing is cached that an outage
// could leave stale, since database/sql drops broken connections and
// dials anew.
func NewPostgres(dsn string) (*Postgres, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgconn redacts the password in the DSN it quotes.
		return nil, fmt.Errorf("open store postgres: %w", err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = pgConnectTimeout
	}
	s := &Postgres{
		where:     fmt.Sprintf("postgres %s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database),
		migrateDB: stdlib.OpenDB(*cfg),
		migrating: make(chan struct{}, 1),
	}
	s.migrateDB.SetMaxOpenConns(1)
	s.migrateDB.SetMaxIdleConns(0)
	s.db = sql.OpenDB(migratingConnector{stdlib.GetConnector(*cfg), s})
	s.vacationReads = vacationReads{db: s.db, order: pgVacationOrder, storable: pgText}
	s.db.SetMaxOpenConns(pgMaxOpenConns)
	s.db.SetMaxIdleConns(pgMaxIdleConns)
	s.db.SetConnMaxIdleTime(pgConnMaxIdleTime)
	s.db.SetConnMaxLifetime(pgConnMaxLifetime)
	return s, nil
}

// migratingConnector makes the pool's connections only once the schema
// is up to date.
type migratingConnector struct {
	driver.Connector
	s *Postgres
}

func (c migratingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	if err := c.s.migrate(ctx); err != nil {
		return nil, err
	}
	return c.Connector.Connect(ctx)
}

// migrate brings the schema up to date once per process, under the
// advisory lock that keeps instances from migrating together.
func (s *Postgres) migrate(ctx context.Context) error {
	if s.migrated.Load() {
		return nil
	}
	select {
	case s.migrating <- struct{}{}:
		defer func() { <-s.migrating }()
	case <-ctx.Done():
		return ctx.Err()
	}
	if s.migrated.Load() {
		return nil
	}
	ms, err := postgresMigrations()
	if err == nil {
		_, _, err = migrateLocked(ctx, s.migrateDB, ms, migrateLockSQL)
	}
	if err != nil {
		return err
	}
	s.migrated.Store(true)
	return nil
}

// Ping connects, migrating first if need be, and reports whether the
// store can be used.
func (s *Postgres) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("open store %s: %w", s.where, err)
	}
	return nil
}

// Unreachable reports whether err says that the database could not be
// reached (refused, timed out, shutting down, not accepting connections
// yet), so that the same call may succeed later; not an error in the
// data, the schema or the configuration of a reachable database.
func Unreachable(err error) bool {
	var (
		ce *pgconn.ConnectError
		ne net.Error
		pe *pgconn.PgError
	)
	switch {
	case errors.As(err, &ce), errors.As(err, &ne),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, driver.ErrBadConn):
		return true
	case errors.As(err, &pe):
		// Class 57: operator intervention (admin shutdown, crash
		// shutdown, cannot connect now); class 08: connection exception.
		return strings.HasPrefix(pe.Code, "57") || strings.HasPrefix(pe.Code, "08")
	}
	return false
}

// Close closes the pool. It may be called more than once.
func (s *Postgres) Close() error {
	s.closeOnce.Do(func() { s.closeErr = errors.Join(s.db.Close(), s.migrateDB.Close()) })
	return s.closeErr
}

// pgRetryable reports a transaction the server aborted to let another
// go first (a deadlock or serialization failure): running it again is
// the documented remedy.
func pgRetryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

func pgUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// write runs f in a READ COMMITTED transaction, again when the server
// chose it as a deadlock's victim.
func (s *Postgres) write(ctx context.Context, f func(tx *sql.Tx) error) error {
	var err error
	for range pgTxAttempts {
		err = s.tx(ctx, f)
		if !pgRetryable(err) {
			return err
		}
	}
	return err
}

func (s *Postgres) tx(ctx context.Context, f func(tx *sql.Tx) error) error {
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

// pgText reports whether PostgreSQL can store s as TEXT: valid UTF-8
// (the database's encoding) without NUL. SQLite takes any bytes, so
// this is where the backends' refusals differ.
func pgText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// checkPgText refuses, as invalid, fields that PostgreSQL cannot store.
func checkPgText(fields ...[2]string) error {
	for _, f := range fields {
		if !pgText(f[1]) {
			return invalid(f[0], "must be UTF-8 without NUL")
		}
	}
	return nil
}

// PutVacation implements Store as SQLite.PutVacation does. Two
// instances putting vacations that name one address at once are kept
// apart by the aliases primary key: the later gets ErrAddressTaken.
func (s *Postgres) PutVacation(ctx context.Context, v Vacation) (Vacation, error) {
	v, err := Normalize(v)
	if err != nil {
		return Vacation{}, err
	}
	names := append([]string{v.Address}, v.Aliases...)
	check := [][2]string{{"subject", v.Subject}, {"body", v.Body}, {"html_body", v.HTMLBody},
		{"from_name", v.FromName}, {"time_zone", v.TimeZone}}
	check = append(check, [2]string{"address", v.Address})
	for _, a := range v.Aliases {
		check = append(check, [2]string{"aliases", a})
	}
	if err := checkPgText(check...); err != nil {
		return Vacation{}, err
	}
	if v.Updated.IsZero() {
		v.Updated = time.Now()
	}
	v.Updated = fromMillis(millis(v.Updated))
	err = s.write(ctx, func(tx *sql.Tx) error {
		taken := func(i int, n string) error {
			field := "aliases"
			if i == 0 {
				field = "address"
			}
			return fmt.Errorf("%s: %s: %w", field, n, ErrAddressTaken)
		}
		for i, n := range names {
			var owner string
			err := tx.QueryRowContext(ctx, `SELECT address FROM aliases WHERE alias = $1 AND address <> $2`, n, v.Address).Scan(&owner)
			if err == nil {
				return taken(i, n)
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
			_, err := tx.ExecContext(ctx, `INSERT INTO aliases (alias, address, pos) VALUES ($1, $2, $3)`, n, v.Address, pos)
			if pgUniqueViolation(err) {
				// Another instance committed n for its user after our check.
				return taken(pos, n)
			}
			if err != nil {
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

// pgVacationOrder sorts addresses by their bytes, as SQLite does, not
// by the database's collation (en_US would put "a.b@" after "ab@").
const pgVacationOrder = ` ORDER BY v.address COLLATE "C", a.pos`

// DeleteVacation removes the vacation of address with its aliases and
// its reply log, in one transaction; replies already queued stay queued.
func (s *Postgres) DeleteVacation(ctx context.Context, address string) error {
	if !pgText(address) {
		return ErrNotFound
	}
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

// ReserveAndEnqueue implements Store as SQLite.ReserveAndEnqueue does.
// Racers on one (user, sender) meet at the reply_log row: under READ
// COMMITTED, ON CONFLICT DO UPDATE waits for the transaction that holds
// the row and then evaluates its WHERE against the committed period, so
// exactly one racer gets a row back and queues a reply.
func (s *Postgres) ReserveAndEnqueue(ctx context.Context, r Reservation, reply Reply) (bool, error) {
	if err := checkReservation(r, reply); err != nil {
		return false, err
	}
	if reply.User == "" {
		reply.User = r.User
	}
	if reply.Rcpt == "" {
		reply.Rcpt = r.Sender
	}
	if err := checkPgText([2]string{"user", r.User}, [2]string{"sender", r.Sender},
		[2]string{"user", reply.User}, [2]string{"mail_from", reply.MailFrom},
		[2]string{"rcpt", reply.Rcpt}, [2]string{"last_error", reply.LastError}); err != nil {
		return false, err
	}
	user, sender := Key(r.User), Key(r.Sender)
	if reply.NextTry.IsZero() {
		reply.NextTry = r.Now
	}
	if reply.Created.IsZero() {
		reply.Created = r.Now
	}
	var reserved bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		reserved = false
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

// PruneReplyLog deletes the reply periods that expired by now.
func (s *Postgres) PruneReplyLog(ctx context.Context, now time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM reply_log WHERE expires_ms <= $1`, millis(now))
	if err != nil {
		return 0, fmt.Errorf("prune reply log: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("prune reply log: %w", err)
	}
	return n, nil
}

// pgClaimSQL is claimSQL with FOR UPDATE SKIP LOCKED: a claimer passes
// the rows another is leasing instead of waiting for them, and one that
// met a row just leased re-checks the lease on the committed row, so no
// reply is leased twice.
const pgClaimSQL = `UPDATE outbox SET lease_until_ms = $1, claim = claim + 1
WHERE id IN (
	SELECT id FROM outbox
	WHERE next_try_ms <= $2 AND lease_until_ms <= $2
	ORDER BY next_try_ms, id
	LIMIT $3
	FOR UPDATE SKIP LOCKED
)
RETURNING id, user_addr, mail_from, rcpt, message, attempts, next_try_ms, last_error, created_ms, claim`

// Claim implements Store; the replies come oldest due first.
func (s *Postgres) Claim(ctx context.Context, now time.Time, lease time.Duration, max int) ([]Reply, error) {
	if max <= 0 {
		return nil, nil
	}
	if lease <= 0 {
		return nil, invalid("lease", "must be positive")
	}
	out, err := s.claim(ctx, now, lease, max)
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

// claim runs pgClaimSQL as one statement, its own transaction.
func (s *Postgres) claim(ctx context.Context, now time.Time, lease time.Duration, max int) ([]Reply, error) {
	rows, err := s.db.QueryContext(ctx, pgClaimSQL, millis(now.Add(lease)), millis(now), max)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Reply
	for rows.Next() {
		var (
			r                Reply
			nextTry, created int64
		)
		if err := rows.Scan(&r.ID, &r.User, &r.MailFrom, &r.Rcpt, &r.Message, &r.Attempts,
			&nextTry, &r.LastError, &created, &r.Claim); err != nil {
			return nil, err
		}
		r.NextTry, r.Created = fromMillis(nextTry), fromMillis(created)
		out = append(out, r)
	}
	return out, rows.Err()
}

// Done removes reply id if claim is its newest claim; ErrNotFound when
// it is not queued, ErrLeaseLost when it was claimed again. The claim
// check and the delete are one statement: a claimer that took the row
// meanwhile has raised its claim, and the row is left to it.
func (s *Postgres) Done(ctx context.Context, id, claim int64) error {
	err := finishClaim(ctx, s.db, doneSQL, id, claim)
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrLeaseLost) {
		return fmt.Errorf("done reply %d: %w", id, err)
	}
	return err
}

// Retry counts an attempt of reply id, records lastErr, ends its lease
// and makes it due at next, if claim is its newest claim; ErrNotFound
// when it is not queued, ErrLeaseLost when it was claimed again. lastErr
// often quotes a remote server, so what PostgreSQL cannot store is
// replaced rather than refused: the retry matters more than the text.
func (s *Postgres) Retry(ctx context.Context, id, claim int64, next time.Time, lastErr string) error {
	lastErr = strings.ReplaceAll(strings.ToValidUTF8(lastErr, "\uFFFD"), "\x00", "\uFFFD")
	err := finishClaim(ctx, s.db, retrySQL, id, claim, millis(next), lastErr)
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrLeaseLost) {
		return fmt.Errorf("retry reply %d: %w", id, err)
	}
	return err
}

// OutboxLen counts queued replies, leased or not.
func (s *Postgres) OutboxLen(ctx context.Context) (int, error) { return outboxLen(ctx, s.db) }

// SetStampAll records whether all mail from address is to be stamped.
func (s *Postgres) SetStampAll(ctx context.Context, address string, on bool) error {
	if err := checkAddress("address", address); err != nil {
		return err
	}
	if err := checkPgText([2]string{"address", address}); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO stamp_prefs (address, stamp_all) VALUES ($1, $2)
ON CONFLICT (address) DO UPDATE SET stamp_all = excluded.stamp_all`, Key(address), on)
	if err != nil {
		return fmt.Errorf("set stamping %s: %w", address, err)
	}
	return nil
}

// StampAll reports whether all mail from address is to be stamped;
// false for an address never set.
func (s *Postgres) StampAll(ctx context.Context, address string) (bool, error) {
	if !pgText(address) {
		return false, nil
	}
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

// StampAllSenders implements Store, in byte order as SQLite sorts.
func (s *Postgres) StampAllSenders(ctx context.Context) ([]string, error) {
	return stampAllSenders(ctx, s.db, `ORDER BY address COLLATE "C"`)
}
