package api

import (
	"strings"
	"testing"
	"time"

	"github.com/replygate/replygate/vacation/store"
)

// FuzzDecode feeds request bodies to every decoder. None may panic, and
// what DecodeVacation accepts must be storable and carry no CR, LF or
// other control character into a header-bound field.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"subject": "Out", "body": "Away.", "start": "2026-12-24", "end": "2026-12-26", "time_zone": "Europe/Berlin", "aliases": ["b@example.com"], "interval_days": 3, "from_name": "Alice"}`,
		`{"body": "x", "subject": "hi\r\nBcc: v@example.org"}`,
		`{"body": "x", "aliases": ["Eve <eve@example.org>"]}`,
		`{"always": true}`,
		`{"name": "ci", "addresses": ["a@example.com"]}`,
		`{"body": "x"} trailing`,
		`{"body": "\u0000"}`,
		"{\"body\": \"\xff\"}",
		`[]`, ``, `{"body": 1e999}`,
	} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body string) {
		v, err := DecodeVacation(strings.NewReader(body), "alice@example.com", now)
		if err == nil {
			if _, nerr := store.Normalize(v); nerr != nil {
				t.Fatalf("accepted %q but the store refuses it: %v", body, nerr)
			}
			for _, s := range append([]string{v.Subject, v.FromName, v.TimeZone}, v.Aliases...) {
				if strings.ContainsFunc(s, isControl) {
					t.Fatalf("accepted a control character in %q from %q", s, body)
				}
			}
			if strings.TrimSpace(v.Body) == "" || v.IntervalDays < 1 {
				t.Fatalf("accepted %+v from %q", v, body)
			}
		} else if _, ok := err.(*FieldError); !ok {
			t.Fatalf("DecodeVacation(%q) = %T %v, want a *FieldError", body, err, err)
		}
		DecodeStamping(strings.NewReader(body))
		if req, err := DecodeTokenRequest(strings.NewReader(body)); err == nil && req.Admin == (len(req.Addresses) > 0) {
			t.Fatalf("token request %q accepted with admin=%v and %d addresses", body, req.Admin, len(req.Addresses))
		}
	})
}
