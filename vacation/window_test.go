package vacation

import (
	"testing"
	"time"
	_ "time/tzdata" // zones without the system's tzdata: the test never skips

	"github.com/replygate/replygate/vacation/store"
)

func TestWindowEdges(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	start, err := ParseTime("2026-12-24", berlin, false)
	if err != nil {
		t.Fatal(err)
	}
	end, err := ParseTime("2026-12-26", berlin, true)
	if err != nil {
		t.Fatal(err)
	}
	v := store.Vacation{Start: start, End: end}
	at := func(s string) time.Time {
		t.Helper()
		tt, err := time.ParseInLocation("2006-01-02 15:04:05.999", s, berlin)
		if err != nil {
			t.Fatal(err)
		}
		return tt
	}
	tests := []struct {
		now  string
		want bool
	}{
		{"2026-12-23 23:59:59.999", false},
		{"2026-12-24 00:00:00", true},     // the start day's first instant
		{"2026-12-26 23:59:59.999", true}, // the end date is inclusive
		{"2026-12-27 00:00:00", false},
	}
	for _, tt := range tests {
		if got := Active(v, at(tt.now)); got != tt.want {
			t.Errorf("Active(24th-26th Berlin, %s) = %v, want %v", tt.now, got, tt.want)
		}
	}
	// The same instant seen from another zone is judged alike.
	if !Active(v, at("2026-12-26 23:30:00").UTC()) {
		t.Errorf("Active depends on the zone of now")
	}
	if !Active(store.Vacation{}, at("2026-01-01 00:00:00")) {
		t.Errorf("Active(open window) = false")
	}
}

func TestWindowDST(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	// 2026-03-29 has 23 hours in Berlin: the end is still the next midnight.
	end, _ := ParseTime("2026-03-29", berlin, true)
	if want := time.Date(2026, 3, 30, 0, 0, 0, 0, berlin); !end.Equal(want) {
		t.Errorf("ParseTime(2026-03-29, end) = %v, want %v", end, want)
	}
	if got := end.Sub(time.Date(2026, 3, 29, 0, 0, 0, 0, berlin)); got != 23*time.Hour {
		t.Errorf("the DST day lasts %v, want 23h", got)
	}
}

func TestParseTime(t *testing.T) {
	if got, err := ParseTime("2026-12-24T09:00:00+01:00", time.UTC, true); err != nil || got.UTC().Hour() != 8 {
		t.Errorf("ParseTime(RFC 3339) = %v, %v", got, err)
	}
	for _, bad := range []string{"", "24.12.2026", "2026-13-01", "tomorrow"} {
		if _, err := ParseTime(bad, time.UTC, false); err == nil {
			t.Errorf("ParseTime(%q) = nil error", bad)
		}
	}
}
