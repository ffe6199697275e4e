package store

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrAddressTaken is returned (wrapped, naming the address) when a
// vacation's address or alias is already the address or an alias of
// another user's vacation: FindVacation must have one answer.
var ErrAddressTaken = errors.New("address taken")

// ErrNewerSchema is returned by an Open when the database was written by
// a newer replygate: this one does not know its schema and will not guess.
var ErrNewerSchema = errors.New("database schema is newer than this replygate")

// InvalidError names a field that a write refused, in the words the API
// gives back: "end: must be after start".
type InvalidError struct {
	Field   string // snake_case, as in the API's JSON
	Problem string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Problem }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// DefaultIntervalDays is the reply interval of a vacation that names none.
const DefaultIntervalDays = 7

// Key returns the form in which the store keeps and compares an address:
// lower-cased. QUIRK: RFC 5321 section 2.4 lets a local part be
// case-sensitive, but no mail system in use treats Bob@ and bob@ as two
// people, and the gate (policy) compares them alike; a sender's MTA that
// writes RCPT TO:<Bob@example.com> must still find bob's vacation, and
// Alice@ and alice@ are one sender for the once-per-period rule. Every
// Store method applies Key to the addresses it is given.
func Key(addr string) string {
	return strings.ToLower(addr)
}

// checkAddress refuses what cannot be a mailbox: no "@", an empty local
// part or domain, or a control character (no CR or LF may ever reach a
// header through a stored address).
func checkAddress(field, addr string) error {
	i := strings.LastIndexByte(addr, '@')
	switch {
	case addr == "":
		return invalid(field, "must not be empty")
	case i < 0:
		return invalid(field, "%q is not an address (no @)", addr)
	case i == 0 || i == len(addr)-1:
		return invalid(field, "%q is not an address", addr)
	case hasControl(addr):
		return invalid(field, "must not contain control characters")
	}
	return nil
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// Normalize checks v as PutVacation does and returns it as it would be
// stored: addresses in Key form, aliases de-duplicated (without the
// address itself), IntervalDays defaulted. Version and Updated are left
// to the store. Backends call it; the API may too, to answer 400 early.
func Normalize(v Vacation) (Vacation, error) {
	if err := checkAddress("address", v.Address); err != nil {
		return Vacation{}, err
	}
	v.Address = Key(v.Address)
	seen := map[string]bool{v.Address: true}
	var aliases []string
	for _, a := range v.Aliases {
		if err := checkAddress("aliases", a); err != nil {
			return Vacation{}, err
		}
		a = Key(a)
		if !seen[a] {
			seen[a] = true
			aliases = append(aliases, a)
		}
	}
	v.Aliases = aliases
	switch {
	case v.IntervalDays < 0:
		return Vacation{}, invalid("interval_days", "must be at least 1")
	case v.IntervalDays == 0:
		v.IntervalDays = DefaultIntervalDays
	}
	if !v.Start.IsZero() && !v.End.IsZero() && !v.End.After(v.Start) {
		return Vacation{}, invalid("end", "must be after start")
	}
	// The body may hold newlines; these become (parts of) header fields.
	for _, f := range []struct{ name, value string }{
		{"subject", v.Subject}, {"from_name", v.FromName}, {"time_zone", v.TimeZone},
	} {
		if hasControl(f.value) {
			return Vacation{}, invalid(f.name, "must not contain control characters")
		}
	}
	// Stored to the millisecond; say so now rather than return a
	// different time than was put.
	v.Start, v.End = truncMilli(v.Start), truncMilli(v.End)
	return v, nil
}

func truncMilli(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return time.UnixMilli(t.UnixMilli()).UTC()
}
