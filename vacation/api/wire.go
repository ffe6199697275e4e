package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/replygate/replygate/vacation"
	"github.com/replygate/replygate/vacation/store"
)

// Bounds on what a request may set. They are generous for people and
// small enough that a hostile client cannot fill the store.
const (
	MaxBody         = 1 << 20 // request body, bytes
	maxText         = 64 << 10
	maxHTML         = 256 << 10
	maxSubject      = 200 // runes
	maxFromName     = 100 // runes; compose keeps no more
	maxAliases      = 50
	maxIntervalDays = 365
	maxAhead        = 10 * 365 * 24 * time.Hour // how far ahead start or end may lie
)

// VacationRequest is the body of PUT /v1/vacations/{address}. Start and
// End are RFC 3339, or a plain date read in TimeZone (default UTC); an
// end date is inclusive.
type VacationRequest struct {
	Subject      string   `json:"subject"`
	Body         string   `json:"body"`
	HTMLBody     string   `json:"html_body,omitempty"`
	FromName     string   `json:"from_name,omitempty"`
	Start        string   `json:"start,omitempty"`
	End          string   `json:"end,omitempty"`
	TimeZone     string   `json:"time_zone,omitempty"`
	IntervalDays int      `json:"interval_days,omitempty"`
	Aliases      []string `json:"aliases,omitempty"`
}

// Vacation is a vacation as the API and the CLI show it.
type Vacation struct {
	Address      string    `json:"address"`
	Aliases      []string  `json:"aliases"`
	Subject      string    `json:"subject"`
	Body         string    `json:"body"`
	HTMLBody     string    `json:"html_body,omitempty"`
	FromName     string    `json:"from_name,omitempty"`
	Start        *string   `json:"start"`
	End          *string   `json:"end"`
	TimeZone     string    `json:"time_zone"`
	IntervalDays int       `json:"interval_days"`
	Version      int64     `json:"version"`
	Updated      time.Time `json:"updated"`
}

// Stamping is the body of PUT /v1/stamping/{address} and the answer of
// GET: Always asks for all the address's own mail to be stamped.
type Stamping struct {
	Address string `json:"address,omitempty"`
	Always  *bool  `json:"always"`
}

// FieldError is a 400 that names the field at fault, in the JSON's words.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// FromStore shows a stored vacation, its times in the zone it was set in.
func FromStore(v store.Vacation) Vacation {
	j := Vacation{Address: v.Address, Aliases: v.Aliases, Subject: v.Subject, Body: v.Body, HTMLBody: v.HTMLBody,
		FromName: v.FromName, TimeZone: v.TimeZone, IntervalDays: v.IntervalDays, Version: v.Version, Updated: v.Updated}
	if j.Aliases == nil {
		j.Aliases = []string{}
	}
	loc, err := time.LoadLocation(v.TimeZone)
	if err != nil {
		loc = time.UTC
	}
	for _, p := range []struct {
		t   time.Time
		dst **string
	}{{v.Start, &j.Start}, {v.End, &j.End}} {
		if !p.t.IsZero() {
			s := p.t.In(loc).Format(time.RFC3339)
			*p.dst = &s
		}
	}
	return j
}

// decodeJSON reads exactly one JSON object into dst, refusing unknown
// fields and trailing data; errors name the field where JSON can.
func decodeJSON(r io.Reader, dst any) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err // *http.MaxBytesError, or the client went away
	}
	// encoding/json would quietly turn bad UTF-8 into U+FFFD.
	if !utf8.Valid(b) {
		return fieldErr("request", "must be UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return err
		case errors.As(err, &te) && te.Field != "":
			return fieldErr(te.Field, "want a JSON %s", te.Type.String())
		case errors.As(err, &se):
			return fieldErr("request", "malformed JSON at byte %d", se.Offset)
		case errors.Is(err, io.EOF):
			return fieldErr("request", "empty; want a JSON object")
		case errors.Is(err, io.ErrUnexpectedEOF):
			return fieldErr("request", "truncated JSON")
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return fieldErr(name, "unknown field")
		}
		return fieldErr("request", "%v", err)
	}
	if dec.More() {
		return fieldErr("request", "trailing data after the JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fieldErr("request", "trailing data after the JSON object")
	}
	return nil
}

// ParseAddress reads an address as the API takes it: one bare mailbox
// (no display name, no group), at most 254 bytes, per net/mail, and
// ASCII. Internationalized addresses are refused for now: the store
// lower-cases addresses, and Unicode case folding maps look-alikes
// together (K, KELVIN SIGN), so an admin approving "\u212Aate@" would
// hand out kate@.
func ParseAddress(field, s string) (string, error) {
	if s == "" {
		return "", fieldErr(field, "must not be empty")
	}
	if len(s) > 254 || strings.ContainsFunc(s, func(r rune) bool { return r >= 0x80 || isControl(r) }) {
		return "", fieldErr(field, "not a valid address (ASCII only, at most 254 bytes)")
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return "", fieldErr(field, "%q is not a bare address like user@example.com", s)
	}
	return store.Key(a.Address), nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }

// DecodeVacation reads and checks a PUT /v1/vacations/{address} body for
// address (already parsed), at now. Every problem comes back as a
// *FieldError; nothing is stored unless it returns nil.
func DecodeVacation(r io.Reader, address string, now time.Time) (store.Vacation, error) {
	var req VacationRequest
	if err := decodeJSON(r, &req); err != nil {
		return store.Vacation{}, err
	}
	return req.check(address, now)
}

func (req VacationRequest) check(address string, now time.Time) (store.Vacation, error) {
	line := func(field, s string, max int) error {
		switch {
		case !utf8.ValidString(s):
			return fieldErr(field, "must be UTF-8")
		case strings.ContainsFunc(s, isControl):
			return fieldErr(field, "must be one line without control characters")
		case utf8.RuneCountInString(s) > max:
			return fieldErr(field, "longer than %d characters", max)
		}
		return nil
	}
	text := func(field, s string, max int) error {
		switch {
		case !utf8.ValidString(s):
			return fieldErr(field, "must be UTF-8")
		case strings.ContainsFunc(s, func(r rune) bool { return isControl(r) && r != '\n' && r != '\r' && r != '\t' }):
			return fieldErr(field, "must not contain control characters")
		case len(s) > max:
			return fieldErr(field, "longer than %d bytes", max)
		}
		return nil
	}
	if strings.TrimSpace(req.Body) == "" {
		return store.Vacation{}, fieldErr("body", "must not be empty")
	}
	for _, err := range []error{
		line("subject", req.Subject, maxSubject),
		line("from_name", req.FromName, maxFromName),
		text("body", req.Body, maxText),
		text("html_body", req.HTMLBody, maxHTML),
		line("time_zone", req.TimeZone, 64),
	} {
		if err != nil {
			return store.Vacation{}, err
		}
	}
	v := store.Vacation{Address: address, Subject: req.Subject, Body: req.Body, HTMLBody: req.HTMLBody,
		FromName: req.FromName, IntervalDays: req.IntervalDays, TimeZone: req.TimeZone}
	switch {
	case req.IntervalDays == 0:
		v.IntervalDays = store.DefaultIntervalDays
	case req.IntervalDays < 1 || req.IntervalDays > maxIntervalDays:
		return store.Vacation{}, fieldErr("interval_days", "must be between 1 and %d", maxIntervalDays)
	}
	if len(req.Aliases) > maxAliases {
		return store.Vacation{}, fieldErr("aliases", "at most %d", maxAliases)
	}
	for _, a := range req.Aliases {
		a, err := ParseAddress("aliases", a)
		if err != nil {
			return store.Vacation{}, err
		}
		v.Aliases = append(v.Aliases, a)
	}
	if v.TimeZone == "" {
		v.TimeZone = "UTC"
	}
	loc, err := time.LoadLocation(v.TimeZone)
	if err != nil || v.TimeZone == "Local" {
		return store.Vacation{}, fieldErr("time_zone", "%q is not an IANA time zone like Europe/Berlin", v.TimeZone)
	}
	for _, p := range []struct {
		field, s string
		dst      *time.Time
		end      bool
	}{{"start", req.Start, &v.Start, false}, {"end", req.End, &v.End, true}} {
		if p.s == "" {
			continue
		}
		t, err := vacation.ParseTime(p.s, loc, p.end)
		if err != nil {
			return store.Vacation{}, fieldErr(p.field, "%v", err)
		}
		if t.After(now.Add(maxAhead)) {
			return store.Vacation{}, fieldErr(p.field, "more than ten years ahead")
		}
		*p.dst = t
	}
	switch {
	case !v.End.IsZero() && !v.Start.IsZero() && !v.End.After(v.Start):
		return store.Vacation{}, fieldErr("end", "must be after start")
	case !v.End.IsZero() && !v.End.After(now):
		return store.Vacation{}, fieldErr("end", "is in the past")
	}
	return v, nil
}

// DecodeStamping reads a PUT /v1/stamping/{address} body.
func DecodeStamping(r io.Reader) (bool, error) {
	var s Stamping
	if err := decodeJSON(r, &s); err != nil {
		return false, err
	}
	if s.Address != "" {
		return false, fieldErr("address", "is taken from the URL, not the body")
	}
	if s.Always == nil {
		return false, fieldErr("always", "required: true or false")
	}
	return *s.Always, nil
}

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	Name      string   `json:"name"`
	Admin     bool     `json:"admin,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
}

// NewToken is the answer to POST /v1/tokens: the only time the secret
// is shown.
type NewToken struct {
	TokenInfo
	Token string `json:"token"`
}

// TokenInfo is a token as lists show it: never its secret.
type TokenInfo struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Admin     bool      `json:"admin"`
	Addresses []string  `json:"addresses"`
	Created   time.Time `json:"created"`
}

// DecodeTokenRequest reads and checks a POST /v1/tokens body.
func DecodeTokenRequest(r io.Reader) (TokenRequest, error) {
	var req TokenRequest
	if err := decodeJSON(r, &req); err != nil {
		return req, err
	}
	if req.Name == "" || !utf8.ValidString(req.Name) || strings.ContainsFunc(req.Name, isControl) || utf8.RuneCountInString(req.Name) > 100 {
		return req, fieldErr("name", "required: one line of at most 100 characters")
	}
	if req.Admin == (len(req.Addresses) > 0) {
		return req, fieldErr("addresses", "give addresses, or admin: true, not both")
	}
	if len(req.Addresses) > maxAliases {
		return req, fieldErr("addresses", "at most %d", maxAliases)
	}
	for i, a := range req.Addresses {
		k, err := ParseAddress("addresses", a)
		if err != nil {
			return req, err
		}
		req.Addresses[i] = k
	}
	return req, nil
}
