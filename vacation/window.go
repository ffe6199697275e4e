package vacation

import (
	"fmt"
	"time"
)

// ParseTime reads a vacation start or end as users write it: RFC 3339
// ("2026-12-24T09:00:00+01:00"), or a plain date ("2026-12-24") in loc,
// the user's time zone. A plain date covers the whole day: as a start it
// is the day's first instant, as an end (end true) the next day's first
// instant, so the end date is inclusive and Active's "before End" holds
// through its last second. Days are counted in loc, so a day that has 23
// or 25 hours (daylight saving) is still one day.
func ParseTime(s string, loc *time.Location, end bool) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseInLocation(time.DateOnly, s, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want a date (2026-12-24) or RFC 3339 time (2026-12-24T09:00:00+01:00)", s)
	}
	if end {
		d = time.Date(d.Year(), d.Month(), d.Day()+1, 0, 0, 0, 0, loc)
	}
	return d, nil
}
