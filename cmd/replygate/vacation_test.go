package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestVacationCLI(t *testing.T) {
	state := t.TempDir()
	var nout, nerr bytes.Buffer
	if code := run([]string{"vacation", "list", "--state", state}, nil, &nout, &nerr); code != 1 || !strings.Contains(nerr.String(), "no replygate state") {
		t.Errorf("vacation list without a daemon's store = %d %q, want 1 and 'no replygate state'", code, nerr.String())
	}
	st, err := openStore("", state) // what `replygate serve` does at start
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(append(append([]string{"vacation"}, args...), "--state", state), nil, &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, _, e := cli("set", "bob@example.com", "--body", "Away until Monday.", "--subject", "Out of office",
		"--start", "2026-12-24", "--end", "2026-12-26", "--tz", "Europe/Berlin", "--alias", "robert@example.com", "--interval", "3"); code != 0 {
		t.Fatalf("vacation set: exit %d: %s", code, e)
	}
	code, out, e := cli("get", "bob@example.com", "--json")
	if code != 0 {
		t.Fatalf("vacation get: exit %d: %s", code, e)
	}
	var v vacationJSON
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("vacation get --json printed %q: %v", out, err)
	}
	if v.Subject != "Out of office" || v.Body != "Away until Monday." || v.IntervalDays != 3 ||
		len(v.Aliases) != 1 || v.Aliases[0] != "robert@example.com" {
		t.Errorf("vacation get = %+v", v)
	}
	// Plain dates cover whole days in the user's zone; the end is inclusive.
	if v.Start == nil || *v.Start != "2026-12-24T00:00:00+01:00" || v.End == nil || *v.End != "2026-12-27T00:00:00+01:00" {
		t.Errorf("window = %v to %v, want 2026-12-24T00:00:00+01:00 to 2026-12-27T00:00:00+01:00", deref(v.Start), deref(v.End))
	}
	if code, out, _ := cli("list"); code != 0 || !strings.HasPrefix(out, "bob@example.com\t") {
		t.Errorf("vacation list = %d %q", code, out)
	}
	if code, _, e := cli("clear", "bob@example.com"); code != 0 {
		t.Errorf("vacation clear: exit %d: %s", code, e)
	}
	if code, _, e := cli("get", "bob@example.com"); code != 1 || !strings.Contains(e, "has no vacation") {
		t.Errorf("vacation get after clear = %d %q, want 1 and 'has no vacation'", code, e)
	}

	bad := []struct {
		args []string
		want string
	}{
		{[]string{"set", "bob@example.com"}, "--body"},
		{[]string{"set", "bob@example.com", "--body", "x", "--body-file", "/etc/hostname"}, "not both"},
		{[]string{"set", "bob@example.com", "--body", "x", "--subject", "hi\r\nBcc: victim@example.org"}, "--subject"},
		{[]string{"set", "bob@example.com", "--body", "x", "--from-name", "Bob\nX-Evil: 1"}, "--from-name"},
		{[]string{"set", "bob@example.com", "--body", "x", "--start", "2026-12-26", "--end", "2026-12-24"}, "after --start"},
		{[]string{"set", "bob@example.com", "--body", "x", "--end", "next week"}, "--end"},
		{[]string{"set", "bob@example.com", "--body", "x", "--interval", "0"}, "--interval"},
		{[]string{"set", "bob@example.com", "--body", "x", "--tz", "Mars/Olympus"}, "--tz"},
		{[]string{"set", "not-an-address", "--body", "x"}, "address"},
		{[]string{"frobnicate"}, "unknown vacation command"},
	}
	for _, b := range bad {
		code, _, e := cli(b.args...)
		if code == 0 || !strings.Contains(e, b.want) || strings.Count(e, "\n") != 1 {
			t.Errorf("vacation %q = exit %d, %q; want a one-line error naming %s", b.args, code, e, b.want)
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
