package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCheckHostileFiles runs `check --json` on message files that no sane
// MTA passes on: exit 0, valid JSON, a clear verdict. The same cases go
// through the classifier (policy.TestHostileInput) and a real milter
// session (milter.TestHostileHeaders).
func TestCheckHostileFiles(t *testing.T) {
	var many strings.Builder
	many.WriteString("To: bob@example.com\n")
	for range 10000 {
		many.WriteString("Received: from x by y\n")
	}
	tests := []struct {
		name    string
		raw     string
		reasons []string
	}{
		{"10,000 fields", many.String() + "\nbody\n", []string{"header-limit"}},
		{"1 MiB line", "To: bob@example.com\nSubject: " + strings.Repeat("x", 1<<20) + "\n\nbody\n", []string{"header-limit"}},
		{"invalid UTF-8", "To: \xff\xfe <bob@example.com>\nSubject: caf\xe9 \xc3\x28\n\n", []string{}},
		{"malformed encoded words", "To: =?utf-8?q?=C3=28?= <bob@example.com>\nSubject: =?utf-8?b?!!!?= =?utf-8?q?unterminated\n\n", []string{}},
		{"encoded opt-out", "To: bob@example.com\nX-Allow-Auto-Reply: =?us-ascii?q?no?=\n\n", []string{"x-allow-auto-reply"}},
		{"NUL bytes", "To: bob@example.com\nSubject: \x00a\x00\n\n\x00\x00", []string{}},
		{"binary", "\x00\xff\x00\xfe\n\x01\x02", []string{"not-addressed"}},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".eml")
		if err := os.WriteFile(path, []byte(tt.raw), 0o600); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		args := []string{"check", "--json", "--mail-from", "alice@example.org", "--rcpt", "bob@example.com", path}
		if code := run(args, nil, &stdout, &stderr); code != 0 {
			t.Errorf("check %s: exit %d: %s", tt.name, code, stderr.String())
			continue
		}
		var v struct {
			AutoReply string   `json:"auto_reply"`
			Reasons   []string `json:"reasons"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &v); err != nil {
			t.Errorf("check %s printed %q: %v", tt.name, stdout.String(), err)
			continue
		}
		want := "allow"
		if len(tt.reasons) > 0 {
			want = "suppress"
		}
		if v.AutoReply != want || !slices.Equal(v.Reasons, tt.reasons) {
			t.Errorf("check %s = %s %q, want %s %q", tt.name, v.AutoReply, v.Reasons, want, tt.reasons)
		}
	}
}
