package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/replygate/replygate/vacation/api"
)

// TestVacationCLI drives `replygate vacation` and `replygate stamping`
// against a running daemon, through its local socket, as a user would.
func TestVacationCLI(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	var nout, nerr bytes.Buffer
	if code := run([]string{"vacation", "list", "--state", state}, nil, &nout, &nerr); code != 1 || !strings.Contains(nerr.String(), "no replygate daemon") {
		t.Errorf("vacation list without a daemon = %d %q, want 1 and 'no replygate daemon'", code, nerr.String())
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	apiAddr := ln.Addr().String()
	ln.Close()
	d := startDaemon(t, nil, "--milter", "unix:"+filepath.Join(dir, "milter.sock"), "--api", apiAddr, "--state", state)
	if fi, err := os.Stat(filepath.Join(state, "api.sock")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("api.sock: %v %v, want mode 0600", fi, err)
	}
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(append(args, "--state", state), nil, &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, _, e := cli("vacation", "set", "bob@example.com", "--body", "Away until Monday.", "--subject", "Out of office",
		"--start", "2026-12-24", "--end", "2030-12-26", "--tz", "Europe/Berlin", "--alias", "robert@example.com", "--interval", "3"); code != 0 {
		t.Fatalf("vacation set: exit %d: %s", code, e)
	}
	code, out, e := cli("vacation", "get", "bob@example.com", "--json")
	if code != 0 {
		t.Fatalf("vacation get: exit %d: %s", code, e)
	}
	var v api.Vacation
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("vacation get --json printed %q: %v", out, err)
	}
	if v.Subject != "Out of office" || v.Body != "Away until Monday." || v.IntervalDays != 3 ||
		len(v.Aliases) != 1 || v.Aliases[0] != "robert@example.com" {
		t.Errorf("vacation get = %+v", v)
	}
	// Plain dates cover whole days in the user's zone; the end is inclusive.
	if v.Start == nil || *v.Start != "2026-12-24T00:00:00+01:00" || v.End == nil || *v.End != "2030-12-27T00:00:00+01:00" {
		t.Errorf("window = %v to %v, want 2026-12-24T00:00:00+01:00 to 2030-12-27T00:00:00+01:00", deref(v.Start), deref(v.End))
	}
	if code, out, _ := cli("vacation", "list"); code != 0 || !strings.HasPrefix(out, "bob@example.com\t") {
		t.Errorf("vacation list = %d %q", code, out)
	}
	if code, out, e := cli("stamping", "set", "ci@example.com", "on"); code != 0 || !strings.Contains(out, "stamping all mail on") {
		t.Errorf("stamping set = %d %q %q", code, out, e)
	}
	if code, out, _ := cli("stamping", "get", "ci@example.com"); code != 0 || !strings.Contains(out, "on") {
		t.Errorf("stamping get = %d %q", code, out)
	}
	code, out, e = cli("token", "create", "bugtracker", "--address", "bob@example.com")
	if code != 0 || !strings.HasPrefix(out, "rgt_") {
		t.Fatalf("token create = %d %q %q", code, out, e)
	}
	if code, out, _ := cli("token", "list"); code != 0 || !strings.Contains(out, "bugtracker\tbob@example.com") || strings.Contains(out, "rgt_") {
		t.Errorf("token list = %d %q (must not show secrets)", code, out)
	}
	if code, _, e := cli("vacation", "clear", "bob@example.com"); code != 0 {
		t.Errorf("vacation clear: exit %d: %s", code, e)
	}
	if code, _, e := cli("vacation", "get", "bob@example.com"); code != 1 || !strings.Contains(e, "has no vacation") {
		t.Errorf("vacation get after clear = %d %q, want 1 and 'has no vacation'", code, e)
	}
	// Each change left an audit line in the daemon's log.
	if n := strings.Count(d.stderr.String(), `"msg":"audit"`); n != 4 {
		t.Errorf("daemon logged %d audit lines, want 4 (set, stamping, token, clear):\n%s", n, d.stderr)
	}

	bad := []struct {
		args []string
		want string
	}{
		{[]string{"vacation", "set", "bob@example.com"}, "--body"},
		{[]string{"vacation", "set", "bob@example.com", "--body", "x", "--body-file", "/etc/hostname"}, "not both"},
		{[]string{"vacation", "set", "bob@example.com", "--body", "x", "--subject", "hi\r\nBcc: victim@example.org"}, "--subject"},
		{[]string{"vacation", "set", "bob@example.com", "--body", "x", "--from-name", "Bob\nX-Evil: 1"}, "--from-name"},
		{[]string{"vacation", "set", "bob@example.com", "--body", "x", "--start", "2030-12-26", "--end", "2030-12-24"}, "--end: must be after start"},
		{[]string{"vacation", "set", "bob@example.com", "--body", "x", "--end", "next week"}, "--end"},
		{[]string{"vacation", "set", "bob@example.com", "--body", "x", "--interval", "0"}, "--interval"},
		{[]string{"vacation", "set", "bob@example.com", "--body", "x", "--tz", "Mars/Olympus"}, "--tz"},
		{[]string{"vacation", "set", "not-an-address", "--body", "x"}, "address"},
		{[]string{"vacation", "frobnicate"}, "unknown vacation command"},
		{[]string{"vacation", "list", "--token", "x"}, "--token needs --server"},
		{[]string{"stamping", "set", "bob@example.com", "maybe"}, "want on or off"},
		{[]string{"token", "create", "x"}, "--admin or --address"},
	}
	for _, b := range bad {
		code, _, e := cli(b.args...)
		if code == 0 || !strings.Contains(e, b.want) || strings.Count(e, "\n") != 1 {
			t.Errorf("%q = exit %d, %q; want a one-line error naming %s", b.args, code, e, b.want)
		}
	}
	if code, out, _ := cli("vacation", "list"); code != 0 || out != "" {
		t.Errorf("refused commands stored something: %q", out)
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
