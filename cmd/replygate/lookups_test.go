package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/replygate/replygate/vacation/store"
)

func TestLookups(t *testing.T) {
	ctx := context.Background()
	st, err := openStore("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.PutVacation(ctx, store.Vacation{Address: "bob@example.com", Aliases: []string{"robert@example.com", "bobby@example.org"},
		Body: "Away.", IntervalDays: 7, Updated: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetStampAll(ctx, "ops@example.com", true); err != nil {
		t.Fatal(err)
	}
	var l lookups
	if got := l.Aliases("bob@example.com"); got != nil {
		t.Errorf("Aliases before load = %v, want nil", got)
	}
	if err := l.load(ctx, st); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		rcpt string
		want []string
	}{
		{"bob@example.com", []string{"robert@example.com", "bobby@example.org"}},
		{"Robert@Example.COM", []string{"bob@example.com", "bobby@example.org"}},
		{"carol@example.com", nil},
	}
	for _, tt := range tests {
		if got := l.Aliases(tt.rcpt); !slices.Equal(got, tt.want) {
			t.Errorf("Aliases(%s) = %v, want %v", tt.rcpt, got, tt.want)
		}
	}
	if !l.OptIn("OPS@example.com") || l.OptIn("bob@example.com") {
		t.Errorf("OptIn(ops) = %v, OptIn(bob) = %v; want true, false", l.OptIn("OPS@example.com"), l.OptIn("bob@example.com"))
	}
}
