package integration

import (
	"bytes"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// mxConfig is a replygate sharing the store dsn, relaying to relay,
// with extra lines for its [vacation] table.
func mxConfig(dsn, relay string, vacation ...string) string {
	return fmt.Sprintf("store = %q\n", dsn) + fmt.Sprintf(vacationConfig, relay) + strings.Join(vacation, "\n") + "\n"
}

// vacationCLI runs `replygate vacation ARGS` with d's config, as an admin
// on d's host would; with PostgreSQL as the store that is the store
// every instance shares.
func vacationCLI(t *testing.T, d *daemon, args ...string) {
	t.Helper()
	args = append([]string{"vacation"}, args...)
	args = append(args, "--config", filepath.Join(d.Dir, "replygate.toml"), "--state", filepath.Join(d.Dir, "state"))
	if out, err := exec.Command(replygateBin, args...).CombinedOutput(); err != nil {
		t.Fatalf("replygate %q: %v\n%s", args, err, out)
	}
}

// milterSend offers one personal message from from to rcpt (also its To)
// over a milter session with the daemon at addr, as an MTA would, and
// returns the daemon's action.
func milterSend(addr, from, rcpt, id string) (gomilter.ActionCode, error) {
	c := gomilter.NewClientWithOptions("tcp", addr, gomilter.ClientOptions{
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, ActionMask: gomilter.OptAddHeader})
	s, err := c.Session()
	if err != nil {
		return 0, err
	}
	defer s.Close()
	if _, err := s.Conn("mx.remote.example", gomilter.FamilyInet, 40000, "192.0.2.1"); err != nil {
		return 0, err
	}
	if _, err := s.Mail("<"+from+">", nil); err != nil {
		return 0, err
	}
	if _, err := s.Rcpt("<"+rcpt+">", nil); err != nil {
		return 0, err
	}
	for _, h := range [][2]string{{"From", from}, {"To", rcpt}, {"Subject", "hi"}, {"Message-ID", "<" + id + "@remote.example>"}} {
		if _, err := s.HeaderField(h[0], h[1]); err != nil {
			return 0, err
		}
	}
	_, act, err := s.End()
	if err != nil {
		return 0, err
	}
	return act.Code, nil
}

// mustAccept is milterSend that fails the test unless the message is
// accepted. It may run in any goroutine (it uses t.Errorf).
func mustAccept(t *testing.T, addr, from, rcpt, id string) bool {
	act, err := milterSend(addr, from, rcpt, id)
	if err != nil || act != gomilter.ActAccept {
		t.Errorf("message %s from %s to %s via %s: action %q, %v; want accept", id, from, rcpt, addr, act, err)
		return false
	}
	return true
}

// deliverBoth delivers, for each of n senders, the same personal message
// to bob@example.com through every MX at the same moment, as a sending
// site whose mail reaches two MX hosts does: conc senders at a time.
func deliverBoth(t *testing.T, n, conc int, mxs ...*daemon) {
	t.Helper()
	var wg sync.WaitGroup
	next := make(chan int)
	for range conc {
		wg.Go(func() {
			for i := range next {
				var both sync.WaitGroup
				start := make(chan struct{})
				for _, mx := range mxs {
					both.Go(func() {
						<-start
						mustAccept(t, mx.Milter, fmt.Sprintf("sender%d@remote.example", i), "bob@example.com", fmt.Sprintf("mx-%d", i))
					})
				}
				close(start)
				both.Wait()
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// outboxEmpty waits until the outbox of the store at dsn is empty: every
// reply that will ever be sent has been, so the sink's count is final.
func outboxEmpty(t *testing.T, dsn string, timeout time.Duration) {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(timeout)
	for {
		var n int
		err := db.QueryRow(`SELECT COUNT(*) FROM outbox`).Scan(&n)
		if err == nil && n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox not empty after %v: %d replies, %v", timeout, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// onceEach checks that the sink's replies went to exactly the senders
// in want, one each.
func onceEach(t *testing.T, msgs []mtalab.Message, want []string) {
	t.Helper()
	seen := map[string]int{}
	for _, r := range replies(msgs) {
		seen[strings.Join(r.To, ",")]++
	}
	for _, rcpt := range want {
		if seen[rcpt] != 1 {
			t.Errorf("%s got %d replies, want 1", rcpt, seen[rcpt])
		}
		delete(seen, rcpt)
	}
	for rcpt, n := range seen {
		t.Errorf("%s got %d replies, want none", rcpt, n)
	}
}

func senders(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d@remote.example", prefix, i)
	}
	return out
}

// logOnFailure shows the daemons' logs when the test failed.
func logOnFailure(t *testing.T, ds map[string]*daemon) {
	t.Cleanup(func() {
		if t.Failed() {
			for name, d := range ds {
				t.Logf("%s:\n%s", name, d.Log())
			}
		}
	})
}

// TestTwoMXOneReply: two replygate instances, one per MX, share one
// PostgreSQL. The same 200 personal messages (200 senders) reach both MX
// hosts at once; exactly 200 replies go out, one per sender.
func TestTwoMXOneReply(t *testing.T) {
	t.Parallel()
	dsn := pgSchema(t)
	sink := mtalab.NewSink(t)
	// The test is about exactly once, not about a slow store: give the
	// bursts on a cold connection pool time to connect.
	config := mxConfig(dsn, sink.Addr(), `offer_timeout = "20s"`)
	mxA := startReplygate(t, config)
	mxB := startReplygate(t, config)
	logOnFailure(t, map[string]*daemon{"A": mxA, "B": mxB})
	vacationCLI(t, mxA, "set", "bob@example.com", "--body", "Away.")

	const n = 200
	deliverBoth(t, n, 20, mxA, mxB)
	// Each message was reserved while its MX waited, so by now every reply
	// that will ever be queued is: exactly one per sender across both.
	// The log lines reach the test through a pipe: wait until both
	// daemons have told about all 2×n messages.
	count := func(msg string) int { return len(filter(mxA.records(), msg)) + len(filter(mxB.records(), msg)) }
	deadline := time.Now().Add(10 * time.Second)
	for count("reply queued")+count("reply already sent this period") < 2*n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	queued, dups := count("reply queued"), count("reply already sent this period")
	if queued != n || dups != n {
		t.Errorf("queued %d and refused %d as duplicates across both MX, want %d and %d", queued, dups, n, n)
	}
	sink.WaitFor(t, 60*time.Second, fmt.Sprintf("%d replies", n), func(m []mtalab.Message) bool {
		return len(replies(m)) >= n
	})
	outboxEmpty(t, dsn, 30*time.Second)
	onceEach(t, sink.Messages(), senders("sender", n))
	t.Logf("%d senders, each message through both MX at once: %d queued, %d refused as duplicates, %d replies",
		n, queued, dups, len(replies(sink.Messages())))
}

// TestTwoMXKillNine: the instance that holds replies in flight (claimed,
// its relay not answering) is killed with kill -9. The other sends each
// of them once its lease has ended, and every sender gets exactly one
// reply.
func TestTwoMXKillNine(t *testing.T) {
	t.Parallel()
	dsn := pgSchema(t)
	// Both relays stall at first, so that replies pile up in the shared
	// outbox and the victim claims its share: each claim is in flight
	// (sent, unanswered) when the victim dies.
	stalled, sink := mtalab.NewSink(t), mtalab.NewSink(t)
	stalled.Hold()
	sink.Hold()
	const lease = 10 * time.Second // so a send is cut off after 5 s: it is still in flight at the kill
	victim := startKillableReplygate(t, mtalab.FreeAddr(t), mxConfig(dsn, stalled.Addr(),
		`offer_timeout = "20s"`, fmt.Sprintf("outbox_lease = %q", lease), "relay_sessions = 4"))
	survivor := startReplygate(t, mxConfig(dsn, sink.Addr(), `offer_timeout = "20s"`))
	logOnFailure(t, map[string]*daemon{"victim": victim, "survivor": survivor})
	vacationCLI(t, victim, "set", "bob@example.com", "--body", "Away.")

	const n = 40
	deliverBoth(t, n, 10, victim, survivor)
	stalled.WaitHeld(t, 4, 30*time.Second) // the victim's four relay sessions
	sink.WaitHeld(t, 2, 30*time.Second)    // the survivor's two: it claims no more until Release
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-victim.done

	// What the victim held when it died: replies leased, in a session
	// with its stalled relay, not with the survivor's.
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT rcpt, lease_until_ms FROM outbox WHERE lease_until_ms > $1`, time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	ofVictim, ofSurvivor := map[string]bool{}, map[string]bool{}
	for _, r := range stalled.Held() {
		ofVictim[r] = true
	}
	for _, r := range sink.Held() {
		ofSurvivor[r] = true
	}
	inFlight := map[string]time.Time{} // rcpt → end of the victim's lease
	for rows.Next() {
		var (
			rcpt  string
			until int64
		)
		if err := rows.Scan(&rcpt, &until); err != nil {
			t.Fatal(err)
		}
		if ofVictim[rcpt] && !ofSurvivor[rcpt] {
			inFlight[rcpt] = time.UnixMilli(until)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(inFlight) == 0 {
		t.Fatalf("no reply in flight on the victim when it was killed (held by its relay: %v)", stalled.Held())
	}

	sink.Release() // the survivor's relay answers from now on
	sink.WaitFor(t, 60*time.Second, fmt.Sprintf("%d replies", n), func(m []mtalab.Message) bool {
		return len(replies(m)) >= n
	})
	outboxEmpty(t, dsn, 30*time.Second)
	msgs := sink.Messages()
	onceEach(t, msgs, senders("sender", n))
	// The victim's replies went out only when its lease let them.
	for _, m := range replies(msgs) {
		if until, ok := inFlight[m.To[0]]; ok && m.At.Before(until) {
			t.Errorf("reply to %s sent at %v, before the dead victim's lease ended at %v", m.To[0], m.At, until)
		}
	}
	t.Logf("%d senders; %d replies in flight on the victim at kill -9, sent by the survivor after the lease (%v); %d replies in all",
		n, len(inFlight), lease, len(replies(msgs)))
}

// TestPostgresOutage: PostgreSQL (a private cluster: the shared server
// is never stopped) goes down and comes back under a running replygate.
// While it is down every message is accepted at once, without a reply,
// and each is logged; afterwards replies resume by themselves, both the
// ones queued before the outage and those of new mail. A second
// instance with fail_action = "tempfail" makes the MTA keep the message
// instead, so its sender is answered when the MTA retries.
func TestPostgresOutage(t *testing.T) {
	t.Parallel()
	pg := mtalab.StartPostgres(t)
	sink := mtalab.NewSink(t)
	// A short lease: replies in flight when the store went away are sent
	// soon after it is back.
	rg := startReplygate(t, mxConfig(pg.DSN(), sink.Addr(), `outbox_lease = "6s"`))
	strict := startReplygate(t, mxConfig(pg.DSN(), sink.Addr())+"[milter]\nfail_action = \"tempfail\"\n")
	logOnFailure(t, map[string]*daemon{"replygate": rg, "tempfail": strict})
	vacationCLI(t, rg, "set", "bob@example.com", "--body", "Away.")

	// Before: replies are queued, and the relay holds two of them in
	// flight when the store goes.
	sink.Hold()
	before := senders("before", 4)
	for i, from := range before {
		mustAccept(t, rg.Milter, from, "bob@example.com", fmt.Sprintf("before-%d", i))
	}
	sink.WaitHeld(t, 2, 30*time.Second)
	pg.Stop(t)

	// During: mail is accepted, quickly, each skipped reply logged.
	during := senders("during", 10)
	var slowest time.Duration
	for i, from := range during {
		start := time.Now()
		if !mustAccept(t, rg.Milter, from, "bob@example.com", fmt.Sprintf("during-%d", i)) {
			t.FailNow()
		}
		slowest = max(slowest, time.Since(start))
	}
	if slowest > 3*time.Second {
		t.Errorf("the slowest message took %v to be accepted while PostgreSQL was down, want at most offer_timeout (1s) and change", slowest)
	}
	if act, err := milterSend(strict.Milter, "patient@remote.example", "bob@example.com", "patient"); err != nil || act != gomilter.ActTempFail {
		t.Errorf("with fail_action tempfail, a message while PostgreSQL is down: action %q, %v; want tempfail", act, err)
	}
	rg.WaitLines(t, 10*time.Second, "a refusal per message", func(l []map[string]any) bool {
		return len(filter(l, "responder refused message"))+len(filter(l, "responder overloaded, applying fail action")) >= len(during)
	})
	for _, d := range []*daemon{rg, strict} {
		d.WaitLines(t, 30*time.Second, "the store gone", func(l []map[string]any) bool {
			return len(filter(l, "store unreachable; mail flows on without vacation replies until it answers")) > 0
		})
	}
	sink.Release() // the sends in flight fail now, with no store to record it
	pg.Start(t)
	for _, d := range []*daemon{rg, strict} {
		d.WaitLines(t, 30*time.Second, "the store back", func(l []map[string]any) bool {
			return len(filter(l, "store reachable; vacation replies resume")) > 0
		})
	}

	// After: new mail is answered again, and the replies queued before
	// the outage go out.
	after := senders("after", 4)
	for i, from := range after {
		mustAccept(t, rg.Milter, from, "bob@example.com", fmt.Sprintf("after-%d", i))
	}
	mustAccept(t, strict.Milter, "patient@remote.example", "bob@example.com", "patient") // the MTA's retry
	want := append(append([]string(nil), before...), after...)
	want = append(want, "patient@remote.example")
	sink.WaitFor(t, 60*time.Second, fmt.Sprintf("%d replies", len(want)), func(m []mtalab.Message) bool {
		return len(replies(m)) >= len(want)
	})
	outboxEmpty(t, pg.DSN(), 30*time.Second)
	onceEach(t, sink.Messages(), want)
	lines := rg.records()
	refused := len(filter(lines, "responder refused message")) + len(filter(lines, "responder overloaded, applying fail action"))
	if refused != len(during) {
		t.Errorf("%d messages logged without a reply, want the %d sent during the outage", refused, len(during))
	}
	if len(filter(lines, "store unreachable; mail flows on without vacation replies until it answers")) != 1 {
		t.Errorf("want one line saying the store went away")
	}
	t.Logf("outage: %d messages accepted (slowest %v), none answered; %d replies before and after, each once",
		len(during), slowest.Round(time.Millisecond), len(want))
}

// TestServeStoreDownAtStart: replygate starts while PostgreSQL is down,
// accepts mail, and answers once the server is up (the schema is made
// then), without a restart.
func TestServeStoreDownAtStart(t *testing.T) {
	t.Parallel()
	pg := mtalab.StartPostgres(t)
	pg.Stop(t)
	sink := mtalab.NewSink(t)
	rg := startReplygate(t, mxConfig(pg.DSN(), sink.Addr()))
	logOnFailure(t, map[string]*daemon{"replygate": rg})
	if len(filter(rg.records(), "store unreachable at start; serving mail without vacation replies until it answers")) != 1 {
		t.Errorf("want one line saying the store is unreachable at start")
	}
	mustAccept(t, rg.Milter, "early@remote.example", "bob@example.com", "early")
	pg.Start(t)
	rg.WaitLines(t, 30*time.Second, "the store reachable", func(l []map[string]any) bool {
		return len(filter(l, "store reachable; vacation replies resume")) > 0
	})
	vacationCLI(t, rg, "set", "bob@example.com", "--body", "Away.")
	mustAccept(t, rg.Milter, "late@remote.example", "bob@example.com", "late")
	sink.WaitFor(t, 30*time.Second, "the reply to late", func(m []mtalab.Message) bool { return len(replies(m)) >= 1 })
	outboxEmpty(t, pg.DSN(), 30*time.Second)
	onceEach(t, sink.Messages(), []string{"late@remote.example"})
}

// TestTwoMXSettings: a vacation set, changed and cleared through
// instance A is what instance B answers with, at once: B reads the
// shared store for each message.
func TestTwoMXSettings(t *testing.T) {
	t.Parallel()
	dsn := pgSchema(t)
	sink := mtalab.NewSink(t)
	mxA := startReplygate(t, mxConfig(dsn, sink.Addr()))
	mxB := startReplygate(t, mxConfig(dsn, sink.Addr()))
	logOnFailure(t, map[string]*daemon{"A": mxA, "B": mxB})
	replyTo := func(rcpt string) mtalab.Message {
		t.Helper()
		var got mtalab.Message
		sink.WaitFor(t, 30*time.Second, "a reply to "+rcpt, func(m []mtalab.Message) bool {
			if r := repliesTo(m, rcpt); len(r) > 0 {
				got = r[len(r)-1]
				return true
			}
			return false
		})
		return got
	}

	vacationCLI(t, mxA, "set", "bob@example.com", "--body", "Away until Monday.", "--alias", "robert@example.com")
	mustAccept(t, mxB.Milter, "alice@remote.example", "bob@example.com", "s1")
	if r := replyTo("alice@remote.example"); !bytes.Contains(r.Data, []byte("Away until Monday.")) {
		t.Errorf("B's reply does not carry the text set through A:\n%s", r.Data)
	}
	// An alias set through A names bob for B.
	mustAccept(t, mxB.Milter, "carol@remote.example", "robert@example.com", "s2")
	replyTo("carol@remote.example")

	// A new text through A starts a new period on B: alice is answered
	// again, with the new text.
	vacationCLI(t, mxA, "set", "bob@example.com", "--body", "Away until Friday.")
	mustAccept(t, mxB.Milter, "alice@remote.example", "bob@example.com", "s3")
	sink.WaitFor(t, 30*time.Second, "a second reply to alice", func(m []mtalab.Message) bool {
		return len(repliesTo(m, "alice@remote.example")) >= 2
	})
	if r := repliesTo(sink.Messages(), "alice@remote.example"); !bytes.Contains(r[1].Data, []byte("Away until Friday.")) {
		t.Errorf("B's second reply does not carry the text changed through A:\n%s", r[1].Data)
	}

	// Cleared through A: B answers nobody any more.
	vacationCLI(t, mxA, "clear", "bob@example.com")
	mustAccept(t, mxB.Milter, "dave@remote.example", "bob@example.com", "s4")
	outboxEmpty(t, dsn, 30*time.Second) // dave's message was judged before B accepted it
	msgs := sink.Messages()
	if a, c, d, all := len(repliesTo(msgs, "alice@remote.example")), len(repliesTo(msgs, "carol@remote.example")),
		len(repliesTo(msgs, "dave@remote.example")), len(replies(msgs)); a != 2 || c != 1 || d != 0 || all != 3 {
		t.Errorf("replies: alice %d, carol %d, dave %d, in all %d; want 2, 1, 0 (cleared through A), 3", a, c, d, all)
	}
}
