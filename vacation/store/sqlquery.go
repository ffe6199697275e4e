package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// The reads below are the same SQL on SQLite and PostgreSQL (both through
// database/sql), so both stores share them.

// queryVacations runs a vacationSelect query: one row per alias, ordered
// by address, folded into one Vacation each.
func queryVacations(ctx context.Context, db *sql.DB, query string, args ...any) ([]Vacation, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var vs []Vacation
	for rows.Next() {
		var (
			v          Vacation
			start, end sql.NullInt64
			updated    int64
			alias      sql.NullString
		)
		if err := rows.Scan(&v.Address, &v.Subject, &v.Body, &v.HTMLBody, &v.FromName,
			&start, &end, &v.TimeZone, &v.IntervalDays, &v.Version, &updated, &alias); err != nil {
			return nil, err
		}
		if n := len(vs); n == 0 || vs[n-1].Address != v.Address {
			v.Start, v.End, v.Updated = fromNullMillis(start), fromNullMillis(end), fromMillis(updated)
			vs = append(vs, v)
		}
		if alias.Valid {
			last := &vs[len(vs)-1]
			last.Aliases = append(last.Aliases, alias.String)
		}
	}
	return vs, rows.Err()
}

// finishClaim runs doneSQL or retrySQL for claim of reply id. When it
// touches no row it tells why: the reply is gone (ErrNotFound) or was
// claimed again (ErrLeaseLost).
func finishClaim(ctx context.Context, db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, query string, id, claim int64, args ...any) error {
	res, err := db.ExecContext(ctx, query, append([]any{id, claim}, args...)...)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n > 0 {
		return err
	}
	var now int64
	switch err := db.QueryRowContext(ctx, `SELECT claim FROM outbox WHERE id = $1`, id).Scan(&now); {
	case errors.Is(err, sql.ErrNoRows):
		return ErrNotFound
	case err != nil:
		return err
	}
	return ErrLeaseLost
}

// outboxLen counts queued replies, leased or not.
func outboxLen(ctx context.Context, db *sql.DB) (int, error) {
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox`).Scan(&n); err != nil {
		return 0, fmt.Errorf("outbox length: %w", err)
	}
	return n, nil
}

// stampAllSenders lists the addresses whose mail is all stamped, in the
// order given.
func stampAllSenders(ctx context.Context, db *sql.DB, order string) ([]string, error) {
	rows, err := db.QueryContext(ctx, `SELECT address FROM stamp_prefs WHERE stamp_all `+order)
	if err != nil {
		return nil, fmt.Errorf("stamp preferences: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, fmt.Errorf("stamp preferences: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// vacationSelect yields one row per alias (a.alias NULL when there is
// none), ordered so that a vacation's rows are consecutive.
const vacationSelect = `SELECT v.address, v.subject, v.body, v.html_body, v.from_name,
	v.start_ms, v.end_ms, v.time_zone, v.interval_days, v.version, v.updated_ms, a.alias
FROM vacations v LEFT JOIN aliases a ON a.address = v.address AND a.pos > 0`

// vacationReads are the vacation reads, the same SQL on both stores;
// each store embeds one. They differ only in the order of the list and
// in what text the database can hold at all.
type vacationReads struct {
	db    *sql.DB
	order string // ORDER BY of a vacationSelect query
	// storable reports whether the database can hold addr; when it
	// cannot, nothing stored can equal it (PostgreSQL refuses NUL and
	// bad UTF-8 in queries as it does in rows).
	storable func(addr string) bool
}

func (r vacationReads) one(ctx context.Context, op, addr, query string) (Vacation, error) {
	if !r.storable(addr) {
		return Vacation{}, ErrNotFound
	}
	vs, err := queryVacations(ctx, r.db, query, Key(addr))
	if err != nil {
		return Vacation{}, fmt.Errorf("%s %s: %w", op, addr, err)
	}
	if len(vs) == 0 {
		return Vacation{}, ErrNotFound
	}
	return vs[0], nil
}

// GetVacation returns the vacation of address, or ErrNotFound.
func (r vacationReads) GetVacation(ctx context.Context, address string) (Vacation, error) {
	return r.one(ctx, "get vacation", address, vacationSelect+` WHERE v.address = $1`+r.order)
}

// FindVacation returns the vacation whose address or alias is rcpt (in
// Key form), or ErrNotFound: one lookup in the aliases primary key.
func (r vacationReads) FindVacation(ctx context.Context, rcpt string) (Vacation, error) {
	return r.one(ctx, "find vacation", rcpt,
		vacationSelect+` WHERE v.address = (SELECT n.address FROM aliases n WHERE n.alias = $1)`+r.order)
}

// ListVacations returns every vacation, by address.
func (r vacationReads) ListVacations(ctx context.Context) ([]Vacation, error) {
	vs, err := queryVacations(ctx, r.db, vacationSelect+r.order)
	if err != nil {
		return nil, fmt.Errorf("list vacations: %w", err)
	}
	return vs, nil
}
