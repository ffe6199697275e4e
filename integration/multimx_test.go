package integration

import (
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/replygate/replygate/internal/mtalab"
)

// pgSchema makes a fresh schema on the test PostgreSQL (127.0.0.1, trust
// auth, database test; REPLYGATE_TEST_POSTGRES overrides) and returns a
// store URL that uses it. It skips without PostgreSQL, and fails under
// CI=true.
func pgSchema(t *testing.T) string {
	t.Helper()
	base := os.Getenv("REPLYGATE_TEST_POSTGRES")
	if base == "" {
		base = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	db, err := sql.Open("pgx", base)
	if err == nil {
		err = db.Ping()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no PostgreSQL at %s: %v", base, err)
		}
		t.Skipf("no PostgreSQL at %s: %v", base, err)
	}
	schema := fmt.Sprintf("rgmx_%d", time.Now().UnixNano())
	if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Exec("DROP SCHEMA " + schema + " CASCADE")
		db.Close()
	})
	return base + "&search_path=" + schema
}

// TestTwoMXOneReply: two replygate instances, one per MX, share one
// PostgreSQL. The same sender writes to a user on vacation through both
// MX hosts at once; exactly one reply goes out per sender.
func TestTwoMXOneReply(t *testing.T) {
	t.Parallel()
	dsn := pgSchema(t)
	sink := mtalab.NewSink(t)
	// The test is about exactly once, not about a slow store: give the
	// burst of 40 sessions on a cold connection pool time to connect.
	config := fmt.Sprintf("store = %q\n", dsn) + fmt.Sprintf(vacationConfig, sink.Addr()) + "offer_timeout = \"20s\"\n"
	mxA := startReplygate(t, config)
	mxB := startReplygate(t, config)
	out, err := exec.Command(replygateBin, "vacation", "set", "bob@example.com", "--body", "Away.",
		"--config", filepath.Join(mxA.Dir, "replygate.toml"), "--state", filepath.Join(mxA.Dir, "state")).CombinedOutput()
	if err != nil {
		t.Fatalf("vacation set: %v\n%s", err, out)
	}

	const senders = 20
	send := func(mx *daemon, i int) error {
		c := gomilter.NewClientWithOptions("tcp", mx.Milter, gomilter.ClientOptions{
			ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, ActionMask: gomilter.OptAddHeader})
		s, err := c.Session()
		if err != nil {
			return err
		}
		defer s.Close()
		from := fmt.Sprintf("sender%d@remote.example", i)
		if _, err := s.Conn("mx.remote.example", gomilter.FamilyInet, 40000, "192.0.2.1"); err != nil {
			return err
		}
		if _, err := s.Mail("<"+from+">", nil); err != nil {
			return err
		}
		if _, err := s.Rcpt("<bob@example.com>", nil); err != nil {
			return err
		}
		for _, h := range [][2]string{{"From", from}, {"To", "bob@example.com"}, {"Subject", "hi"}, {"Message-ID", fmt.Sprintf("<mx-%d@remote.example>", i)}} {
			if _, err := s.HeaderField(h[0], h[1]); err != nil {
				return err
			}
		}
		_, act, err := s.End()
		if err != nil {
			return err
		}
		if act.Code != gomilter.ActAccept {
			return fmt.Errorf("action %c", act.Code)
		}
		return nil
	}
	var wg sync.WaitGroup
	errc := make(chan error, 2*senders)
	for i := 0; i < senders; i++ {
		for _, mx := range []*daemon{mxA, mxB} {
			wg.Go(func() {
				if err := send(mx, i); err != nil {
					errc <- err
				}
			})
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("A:\n%s\nB:\n%s", mxA.Log(), mxB.Log())
		}
	}()
	msgs := sink.WaitFor(t, 30*time.Second, fmt.Sprintf("%d replies", senders), func(m []mtalab.Message) bool {
		return len(replies(m)) >= senders
	})
	// Each message was reserved while its MX waited, so by now every reply
	// that will ever be queued is: exactly one per sender across both.
	// The log lines reach the test through a pipe: wait until both
	// daemons have told about all 2×senders messages.
	count := func(msg string) int { return len(filter(mxA.records(), msg)) + len(filter(mxB.records(), msg)) }
	deadline := time.Now().Add(10 * time.Second)
	for count("reply queued")+count("reply already sent this period") < 2*senders && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	queued, dups := count("reply queued"), count("reply already sent this period")
	if queued != senders || dups != senders {
		t.Errorf("queued %d and refused %d as duplicates across both MX, want %d and %d", queued, dups, senders, senders)
	}
	seen := map[string]int{}
	for _, r := range replies(msgs) {
		seen[r.To[0]]++
	}
	for rcpt, n := range seen {
		if n != 1 {
			t.Errorf("%s got %d replies, want 1", rcpt, n)
		}
	}
	if len(seen) != senders {
		t.Errorf("%d senders answered, want %d", len(seen), senders)
	}
}
