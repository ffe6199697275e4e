package store

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoadMigrations(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	tests := []struct {
		name    string
		fs      fstest.MapFS
		want    []int
		wantErr string
	}{
		{"in order", fstest.MapFS{"002_b.sql": file("B"), "001_a.sql": file("A"), "003_c_d.sql": file("C")}, []int{1, 2, 3}, ""},
		{"gap", fstest.MapFS{"001_a.sql": file("A"), "003_c.sql": file("C")}, nil, "want version 2"},
		{"repeat", fstest.MapFS{"001_a.sql": file("A"), "001_b.sql": file("B")}, nil, "want version 2"},
		{"not from 1", fstest.MapFS{"002_a.sql": file("A")}, nil, "want version 1"},
		{"bad name", fstest.MapFS{"001_a.sql": file("A"), "2_b.sql": file("B")}, nil, "NNN_name.sql"},
		{"none", fstest.MapFS{}, nil, "no migrations"},
	}
	for _, tt := range tests {
		ms, err := loadMigrations(tt.fs)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("loadMigrations(%s) = %v, want an error with %q", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("loadMigrations(%s) = %v", tt.name, err)
			continue
		}
		var got []int
		for _, m := range ms {
			got = append(got, m.version)
		}
		if len(got) != len(tt.want) || (len(got) > 0 && got[len(got)-1] != tt.want[len(tt.want)-1]) {
			t.Errorf("loadMigrations(%s) versions = %v, want %v", tt.name, got, tt.want)
		}
	}
	if _, err := sqliteMigrations(); err != nil {
		t.Errorf("embedded SQLite migrations: %v", err)
	}
}

// The connection settings that the durability and concurrency promises
// rest on are in force on every connection.
func TestSQLitePragmas(t *testing.T) {
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "replygate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.db.SetMaxIdleConns(4)
	ctx := context.Background()
	for range 3 { // several connections of the pool
		conn, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for pragma, want := range map[string]string{
			"journal_mode": "wal",
			"synchronous":  "2", // FULL
			"foreign_keys": "1",
			"busy_timeout": "5000",
		} {
			var got string
			if err := conn.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil || got != want {
				t.Errorf("PRAGMA %s = %q, %v; want %q", pragma, got, err, want)
			}
		}
	}
}
