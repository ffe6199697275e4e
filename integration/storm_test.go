package integration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/emersion/go-smtp"

	"github.com/replygate/replygate/internal/mtalab"
)

// stormConfig: replies go to the sink through two relay sessions; a full
// outbox tempfails the message, so the sending MTA keeps it and retries
// (load queues at the edge) and no reply is lost.
const stormConfig = `relay = %q

[milter]
fail_action = "tempfail"

[vacation]
relay_sessions = 2
max_outbox = %d
`

// TestVacationStorm sends N allowed messages from N senders to one user
// on vacation through Postfix, with senders that retry on 4xx as MTAs do.
// Every sender gets exactly one reply, the outbox never passes its bound,
// and replygate's memory stays bounded. N is 300 in the test suite;
// REPLYGATE_STORM=10000 runs the full storm (see BENCHMARKS.md).
func TestVacationStorm(t *testing.T) {
	t.Parallel()
	mtalab.NeedRoot(t)
	mtalab.Need(t, "postfix", "saslpasswd2")
	n, maxOutbox, conc := 300, 50, 10
	if s := os.Getenv("REPLYGATE_STORM"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("REPLYGATE_STORM=%q: want a message count", s)
		}
		maxOutbox = 500
	}
	sink := mtalab.NewSink(t)
	rg := startReplygate(t, fmt.Sprintf(stormConfig, sink.Addr(), maxOutbox))
	pf := mtalab.StartPostfix(t, contribPostfix(t, rg.Milter, sink.Addr()))
	setVacation(t, rg, "bob@example.com", "--body", "Away for the storm.")
	addr := pf.Addr(mtalab.SMTPService)

	start := time.Now()
	tempfails := sendStorm(t, n, conc, func() func(i int) (bool, error) {
		c := mtalab.Dial(t, addr) // here: Dial may fail the test, which only this goroutine may do
		return func(i int) (bool, error) {
			from := fmt.Sprintf("sender%d@remote.example", i)
			_, err := c.Send(from, []string{"bob@example.com"}, pfMessage(fmt.Sprintf("storm-%d", i), from, "bob@example.com"))
			var se *smtp.SMTPError
			if errors.As(err, &se) && se.Code/100 == 4 {
				return true, nil
			}
			return false, err
		}
	})
	checkStorm(t, "storm through Postfix", rg, sink, n, maxOutbox, start, tempfails)
}

// vmHWM reads a process's peak resident set size in KiB.
func vmHWM(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			k, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return k
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestVacationStormMilter is the storm without Postfix in front: N
// messages from N senders to one user, straight over milter sessions as
// fast as replygate takes them, so the responder, not the MTA, sets the
// pace. A tempfail (outbox full) is retried, as the MTA would. N is 200
// in the test suite; REPLYGATE_STORM=10000 runs the full storm.
func TestVacationStormMilter(t *testing.T) {
	t.Parallel()
	// In the suite: fewer clients, so that thousands of tempfailed
	// sessions do not exhaust loopback ports beside the other tests.
	n, maxOutbox, conc := 200, 50, 8
	if s := os.Getenv("REPLYGATE_STORM"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("REPLYGATE_STORM=%q: want a message count", s)
		}
		maxOutbox, conc = 500, 16
	}
	sink := mtalab.NewSink(t)
	rg := startReplygate(t, fmt.Sprintf(stormConfig, sink.Addr(), maxOutbox))
	setVacation(t, rg, "bob@example.com", "--body", "Away for the storm.")
	client := gomilter.NewClientWithOptions("tcp", rg.Milter, gomilter.ClientOptions{
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, ActionMask: gomilter.OptAddHeader})

	one := func(i int) (gomilter.ActionCode, error) {
		s, err := client.Session()
		if err != nil {
			return 0, err
		}
		defer s.Close()
		from := fmt.Sprintf("sender%d@remote.example", i)
		steps := []func() error{
			func() error {
				_, err := s.Conn("mx.remote.example", gomilter.FamilyInet, 40000, "192.0.2.1")
				return err
			},
			func() error { _, err := s.Mail("<"+from+">", nil); return err },
			func() error { _, err := s.Rcpt("<bob@example.com>", nil); return err },
			func() error { _, err := s.HeaderField("From", from); return err },
			func() error { _, err := s.HeaderField("To", "Bob <bob@example.com>"); return err },
			func() error { _, err := s.HeaderField("Subject", "storm"); return err },
			func() error {
				_, err := s.HeaderField("Message-ID", fmt.Sprintf("<storm-%d@remote.example>", i))
				return err
			},
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return 0, err
			}
		}
		_, act, err := s.End()
		if err != nil {
			return 0, err
		}
		return act.Code, nil
	}

	start := time.Now()
	tempfails := sendStorm(t, n, conc, func() func(i int) (bool, error) {
		return func(i int) (bool, error) {
			act, err := one(i)
			switch {
			case err != nil:
				return false, err
			case act == gomilter.ActTempFail:
				return true, nil
			case act != gomilter.ActAccept:
				return false, fmt.Errorf("message %d: action %c", i, act)
			}
			return false, nil
		}
	})
	checkStorm(t, "storm over milter sessions", rg, sink, n, maxOutbox, start, tempfails)
}

// checkStorm waits for the n replies of a storm that began at start, and
// checks and logs what the storm tests promise: every sender answered
// exactly once, the relay rate, and replygate's memory.
func checkStorm(t *testing.T, what string, rg *daemon, sink *mtalab.Sink, n, maxOutbox int, start time.Time, tempfails int64) {
	t.Helper()
	accepted := time.Since(start)
	msgs := sink.WaitFor(t, time.Duration(n/20+120)*time.Second, fmt.Sprintf("%d replies", n), func(m []mtalab.Message) bool {
		return len(replies(m)) >= n
	})
	all := time.Since(start)
	seen := map[string]int{}
	perSecond := map[int64]int{}
	for _, r := range replies(msgs) {
		seen[strings.Join(r.To, ",")]++
		perSecond[r.At.Unix()]++
	}
	for rcpt, k := range seen {
		if k != 1 {
			t.Errorf("%s got %d replies, want 1", rcpt, k)
		}
	}
	if len(seen) != n {
		t.Errorf("%d senders answered, want %d", len(seen), n)
	}
	peakRate := 0
	for _, k := range perSecond {
		peakRate = max(peakRate, k)
	}
	rss := vmHWM(t, rg.cmd.Process.Pid)
	t.Logf("%s: %d messages from %d senders accepted in %v (%d tempfails with max_outbox %d); "+
		"%d replies, all sent after %v; peak relay rate %d replies/s over 2 sessions; replygate peak RSS %d KiB",
		what, n, n, accepted.Round(time.Millisecond), tempfails, maxOutbox, len(seen), all.Round(time.Millisecond), peakRate, rss)
	if n >= 1000 && rss > 200<<10 {
		t.Errorf("replygate peak RSS %d KiB, want under 200 MiB", rss)
	}
}

// sendStorm sends messages 0..n-1 from conc workers, each with a sender
// made by newSender (in the test goroutine). A sender reports tempfail for
// a 4xx, and the message is retried as a sending MTA would, for up to two
// minutes. It returns the number of tempfails.
func sendStorm(t *testing.T, n, conc int, newSender func() func(i int) (tempfail bool, err error)) int64 {
	t.Helper()
	var next, tempfails atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, conc)
	for w := 0; w < conc; w++ {
		send := newSender()
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				giveUp := time.Now().Add(2 * time.Minute) // a sending MTA keeps trying for days
				for {
					tempfail, err := send(i)
					if err != nil || tempfail && time.Now().After(giveUp) {
						errc <- fmt.Errorf("message %d: tempfail %v, %v", i, tempfail, err)
						return
					}
					if !tempfail {
						break
					}
					tempfails.Add(1)
					time.Sleep(50 * time.Millisecond) // the sending MTA's retry, shortened
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	return tempfails.Load()
}
