package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Token is an API bearer token as stored: its scope and a hash of its
// secret, never the secret.
type Token struct {
	ID        string   // public handle: lists show it, revocation names it
	Name      string   // what the admin called it ("bugtracker", "local")
	Hash      string   // hex SHA-256 of the secret
	Admin     bool     // manages every address
	Addresses []string // else: the addresses it manages
	Created   time.Time
}

// Token SQL is the same on SQLite and PostgreSQL ($n placeholders work
// in both), so both stores call these.

func createToken(ctx context.Context, db *sql.DB, t Token) error {
	if t.ID == "" || t.Hash == "" {
		return errors.New("create token: empty id or hash")
	}
	for _, f := range [][2]string{{"name", t.Name}, {"id", t.ID}} {
		if strings.ContainsFunc(f[1], isControl) || len(f[1]) > 200 {
			return invalid(f[0], "must be at most 200 characters, without control characters")
		}
	}
	addrs := make([]string, len(t.Addresses))
	for i, a := range t.Addresses {
		if err := checkAddress("addresses", a); err != nil {
			return err
		}
		addrs[i] = Key(a)
	}
	_, err := db.ExecContext(ctx, `INSERT INTO api_tokens (id, name, hash, admin, addresses, created_ms)
VALUES ($1, $2, $3, $4, $5, $6)`, t.ID, t.Name, t.Hash, t.Admin, strings.Join(addrs, "\n"), millis(t.Created))
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

const tokenColumns = `id, name, hash, admin, addresses, created_ms`

func scanToken(row interface{ Scan(...any) error }) (Token, error) {
	var (
		t       Token
		addrs   string
		created int64
	)
	if err := row.Scan(&t.ID, &t.Name, &t.Hash, &t.Admin, &addrs, &created); err != nil {
		return Token{}, err
	}
	if addrs != "" {
		t.Addresses = strings.Split(addrs, "\n")
	}
	t.Created = fromMillis(created)
	return t, nil
}

func getToken(ctx context.Context, db *sql.DB, id string) (Token, error) {
	t, err := scanToken(db.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE id = $1`, id))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return Token{}, ErrNotFound
	case err != nil:
		return Token{}, fmt.Errorf("token %s: %w", id, err)
	}
	return t, nil
}

func listTokens(ctx context.Context, db *sql.DB) ([]Token, error) {
	rows, err := db.QueryContext(ctx, `SELECT `+tokenColumns+` FROM api_tokens ORDER BY created_ms, id`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	var out []Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

func deleteToken(ctx context.Context, db *sql.DB, id string) error {
	res, err := db.ExecContext(ctx, `DELETE FROM api_tokens WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return ErrNotFound
	}
	return nil
}

// CreateToken stores t; its secret's hash, never the secret.
func (s *SQLite) CreateToken(ctx context.Context, t Token) error { return createToken(ctx, s.db, t) }

// GetToken returns the token whose ID is id, or ErrNotFound.
func (s *SQLite) GetToken(ctx context.Context, id string) (Token, error) {
	return getToken(ctx, s.db, id)
}

// ListTokens returns every token, oldest first.
func (s *SQLite) ListTokens(ctx context.Context) ([]Token, error) { return listTokens(ctx, s.db) }

// DeleteToken revokes token id; ErrNotFound when there is none.
func (s *SQLite) DeleteToken(ctx context.Context, id string) error {
	return deleteToken(ctx, s.db, id)
}

// CreateToken stores t; its secret's hash, never the secret.
func (s *Postgres) CreateToken(ctx context.Context, t Token) error {
	if err := checkPgText([2]string{"name", t.Name}); err != nil {
		return err
	}
	return createToken(ctx, s.db, t)
}

// GetToken returns the token whose ID is id, or ErrNotFound.
func (s *Postgres) GetToken(ctx context.Context, id string) (Token, error) {
	if !pgText(id) {
		return Token{}, ErrNotFound
	}
	return getToken(ctx, s.db, id)
}

// ListTokens returns every token, oldest first.
func (s *Postgres) ListTokens(ctx context.Context) ([]Token, error) { return listTokens(ctx, s.db) }

// DeleteToken revokes token id; ErrNotFound when there is none.
func (s *Postgres) DeleteToken(ctx context.Context, id string) error {
	if !pgText(id) {
		return ErrNotFound
	}
	return deleteToken(ctx, s.db, id)
}
