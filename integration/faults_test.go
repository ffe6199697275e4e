package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/replygate/replygate/internal/mtalab"
)

// The fault tests (issue 7, RELIABILITY.md "Faults"): a private Postfix
// with replygate as its milter, under steady load from Postfix's
// smtp-source and from a loop of distinct senders writing to a user on
// vacation, while replygate is killed with kill -9 and restarted
// (TestFaultKill), stopped with SIGSTOP and resumed with SIGCONT
// (TestFaultStall), or cut off from its store, a private PostgreSQL that
// is stopped and started (TestFaultStore). Each run counts:
//
//   - messages lost: accepted by Postfix and not delivered to the sink;
//   - messages delivered without a verdict: no X-Replygate-Verdict field
//     (milter_default_action = accept let them through unjudged);
//   - vacation replies lost and duplicated. The store's reply log says
//     whose reply was queued: a queued reply must reach the sink exactly
//     once, kill -9 or not. A message that got no verdict (the milter was
//     down) expects no reply, and one judged while the store was down got
//     none by the fail action; both are counted apart, not as lost.
//
// In the suite each fault runs for a few seconds. The full runs, whose
// figures RELIABILITY.md shows, take about 15 minutes:
//
//	REPLYGATE_FAULTS=full CI=true go test -race -count=1 -timeout 60m -run Fault -v ./integration

// faultSize is how much load and how many faults a run has.
type faultSize struct {
	full bool
	// smtp-source runs -s bulkSessions -w 1 (each session sends a
	// message a second) and -m bulkPerRun messages per run, again and
	// again until the faults are over.
	bulkSessions, bulkPerRun int
	// vacWorkers senders each start a message to the vacation user every
	// vacEvery, from a new sender address each time.
	vacWorkers int
	vacEvery   time.Duration
	// lease is vacation.outbox_lease: replies claimed by an instance that
	// was killed wait this long before the next one sends them.
	lease string
}

func faultSizeOf(t *testing.T) faultSize {
	switch v := os.Getenv("REPLYGATE_FAULTS"); v {
	case "":
		return faultSize{bulkSessions: 5, bulkPerRun: 25, vacWorkers: 1, vacEvery: 150 * time.Millisecond, lease: "10s"}
	case "full":
		return faultSize{full: true, bulkSessions: 20, bulkPerRun: 200, vacWorkers: 4, vacEvery: 200 * time.Millisecond, lease: "2m10s"}
	default:
		t.Fatalf(`REPLYGATE_FAULTS=%q: want "full" or nothing`, v)
		return faultSize{}
	}
}

// faultConfig is replygate's configuration in the fault tests: the trace
// header on every judged message, replies to the sink. Arguments: relay,
// store ("" is SQLite in the state directory), fail action, outbox lease.
const faultConfig = `relay = %q
store = %q

[milter]
trace_header = true
fail_action = %q

[vacation]
hostname = "mx.example.com"
outbox_lease = %q
`

// vacUser is on vacation in every fault run.
const vacUser = "bob@example.com"

// faultLab is Postfix, the sink, replygate (restarted in place) and the
// two loads.
type faultLab struct {
	t      *testing.T
	size   faultSize
	sink   *mtalab.Sink
	pf     *mtalab.Postfix
	dir    string // replygate's config and state, kept across restarts
	addr   string // replygate's milter, the same across restarts
	config string
	dsn    string // PostgreSQL; "" is SQLite in dir

	rg  *daemon   // the instance running now
	all []*daemon // every instance, for the logs

	stopLoad context.CancelFunc
	loads    sync.WaitGroup
	bulk     bulkLoad
	vac      vacLoad
}

// newFaultLab starts replygate with failAction on the store dsn, then
// Postfix with contrib's lines and main.cf's extra lines after them.
func newFaultLab(t *testing.T, size faultSize, dsn, failAction, extraMain string) *faultLab {
	t.Helper()
	mtalab.NeedRoot(t)
	mtalab.Need(t, "postfix", "postqueue", "saslpasswd2", "smtp-source")
	l := &faultLab{t: t, size: size, dir: t.TempDir(), addr: stableAddr(t), dsn: dsn}
	l.sink = mtalab.NewSink(t)
	l.config = fmt.Sprintf(faultConfig, l.sink.Addr(), dsn, failAction, size.lease)
	l.start()
	t.Cleanup(func() {
		if t.Failed() {
			for i, d := range l.all {
				t.Logf("replygate instance %d, last lines:\n%s", i+1, lastLines(d.Log(), 60))
			}
		}
	})
	cfg := contribPostfix(t, l.addr, l.sink.Addr())
	cfg.Main += extraMain
	l.pf = mtalab.StartPostfix(t, cfg)
	vacationCLI(t, l.rg, "set", vacUser, "--body", "Away this week; back on Monday.")
	return l
}

// stableAddr returns a free 127.0.0.1 port below the kernel's ephemeral
// range, so that while the daemon is down no outgoing connection takes it
// as its local port (one from FreeAddr may be taken so) and the restart
// finds it free.
func stableAddr(t *testing.T) string {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				low = n
			}
		}
	}
	for range 100 {
		addr := fmt.Sprintf("127.0.0.1:%d", 10000+rand.IntN(low-10000))
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatal("no free port below the ephemeral range")
	return ""
}

// start runs a replygate instance on the lab's state and milter address
// and waits until it is ready. Another process may hold its API port
// (chosen anew each time): it tries again.
func (l *faultLab) start() {
	t := l.t
	t.Helper()
	for attempt := 1; ; attempt++ {
		d := spawnReplygateIn(t, l.dir, l.addr, l.config)
		t.Cleanup(func() {
			d.cmd.Process.Kill()
			<-d.done
		})
		l.all = append(l.all, d)
		if readyOrExited(d, 60*time.Second) {
			l.rg = d
			return
		}
		if attempt == 10 || !strings.Contains(d.Log(), "address already in use") {
			t.Fatalf("replygate instance %d did not start:\n%s", len(l.all), d.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// readyOrExited waits until d logged "ready" (true) or exited (false).
func readyOrExited(d *daemon, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		d.mu.Lock()
		lines, changed := d.lines, d.changed
		d.mu.Unlock()
		if len(filter(lines, "ready")) > 0 {
			return true
		}
		select {
		case <-changed:
		case <-d.done:
			return false
		case <-deadline.C:
			return false
		}
	}
}

// kill ends the running instance with SIGKILL.
func (l *faultLab) kill() {
	l.rg.cmd.Process.Signal(syscall.SIGKILL)
	<-l.rg.done
}

// bulkLoad is smtp-source, run again and again.
type bulkLoad struct {
	mu      sync.Mutex
	runs    int
	aborted []string // what smtp-source said when it gave up
}

// vacLoad is the loop of senders writing to the vacation user.
type vacLoad struct {
	mu        sync.Mutex
	next      int
	accepted  map[string]string // sender → Postfix's queue id
	tempfails int               // 4xx answers, each retried as an MTA would
	errs      []string
}

// startLoad starts both loads; finish stops them.
func (l *faultLab) startLoad() {
	ctx, cancel := context.WithCancel(context.Background())
	l.stopLoad = cancel
	l.vac.accepted = map[string]string{}
	smtpAddr := l.pf.Addr(mtalab.SMTPService)
	source, err := mtalab.LookPath("smtp-source")
	if err != nil {
		l.t.Fatal(err)
	}
	l.loads.Go(func() {
		for k := 0; ctx.Err() == nil; k++ {
			// -N numbers the recipients (1r0@load.example, 2r0@…), so each
			// message is known at the sink; -w 1: a message a second per
			// session. smtp-source gives up on any answer but 2xx and after
			// 300 s without one.
			cmd := exec.Command(source, "-N", "-l", "1000", "-S", "fault load",
				"-s", strconv.Itoa(l.size.bulkSessions), "-m", strconv.Itoa(l.size.bulkPerRun), "-w", "1",
				"-f", "load@source.example", "-t", fmt.Sprintf("r%d@load.example", k), smtpAddr)
			out, err := cmd.CombinedOutput()
			l.bulk.mu.Lock()
			l.bulk.runs++
			if err != nil {
				l.bulk.aborted = append(l.bulk.aborted, fmt.Sprintf("run %d: %v: %s", k, err, strings.TrimSpace(string(out))))
			}
			l.bulk.mu.Unlock()
		}
	})
	for range l.size.vacWorkers {
		l.loads.Go(func() {
			tick := time.NewTicker(l.size.vacEvery)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				l.vac.mu.Lock()
				i := l.vac.next
				l.vac.next++
				l.vac.mu.Unlock()
				l.sendVacation(smtpAddr, fmt.Sprintf("v%d@remote.example", i), fmt.Sprintf("fault-%d", i))
			}
		})
	}
}

// sendVacation sends one message from a new sender to the vacation user
// as a sending MTA would: a 4xx answer or a broken connection is retried
// a second later, for up to 15 minutes.
func (l *faultLab) sendVacation(addr, from, id string) {
	giveUp := time.Now().Add(15 * time.Minute)
	for {
		qid, err := smtpSend(addr, from, vacUser, pfMessage(id, from, vacUser))
		var se *smtp.SMTPError
		l.vac.mu.Lock()
		switch {
		case err == nil:
			l.vac.accepted[from] = qid
		case errors.As(err, &se) && se.Code/100 == 4:
			l.vac.tempfails++
		default:
			l.vac.errs = append(l.vac.errs, fmt.Sprintf("%s: %v", from, err))
		}
		l.vac.mu.Unlock()
		if err == nil || errors.As(err, &se) && se.Code/100 == 5 || time.Now().After(giveUp) {
			return
		}
		time.Sleep(time.Second)
	}
}

// smtpSend sends one message in a session of its own with go-smtp's
// timeouts (5 minutes a command, 12 for the end of DATA, as RFC 5321
// section 4.5.3.2 asks of a sending MTA) and returns the queue id.
func smtpSend(addr, from, to string, msg []byte) (string, error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.Hello("mx.remote.example"); err != nil {
		return "", err
	}
	qid, err := (&mtalab.Client{Client: c}).Send(from, []string{to}, msg)
	if err == nil {
		c.Quit()
	}
	return qid, err
}

// faultTimes adds up how long the milter (or its store) was unreachable.
type faultTimes struct {
	kill       bool // the faults are kill -9s
	n          int
	total, max time.Duration
	starts     []time.Time
	durs       []time.Duration
}

func (f *faultTimes) add(start time.Time, d time.Duration) {
	f.n++
	f.total += d
	f.max = max(f.max, d)
	f.starts = append(f.starts, start)
	f.durs = append(f.durs, d)
}

// killedBeforeDone finds the kill that explains a reply sent twice: it
// came after the relay took the first copy (at sent) and before any
// instance logged the reply done (at done, zero if never).
func (f *faultTimes) killedBeforeDone(sent, done time.Time) (time.Time, bool) {
	if !f.kill {
		return time.Time{}, false
	}
	for _, k := range f.starts {
		if k.After(sent) && k.Sub(sent) < 10*time.Second && (done.IsZero() || k.Before(done)) {
			return k, true
		}
	}
	return time.Time{}, false
}

// faultResult is what one run counts.
type faultResult struct {
	fault string
	times faultTimes

	elapsed                  time.Duration
	bulkRuns, bulkAborted    int
	accepted, delivered      int // by Postfix's log: queued, and sent to the sink
	lost                     int // queued and never sent
	atSink, deliveredTwice   int // originals at the sink, and copies beyond the first
	noVerdict, noVerdictBulk int // originals at the sink without the trace field
	noVerdictVac             int
	vacSenders, vacTempfails int
	vacErrors                int

	repliesQueued, replies  int // by the store's reply log; at the sink
	repliesLost, repliesDup int
	repliesDupKill          int // of repliesDup: a kill between the relay's acceptance and done
	repliesUnexpected       int // to a sender whose reply was never queued
	noVerdictReplied        int // no verdict reached Postfix, yet the reply was queued
	judgedNoReply           int // judged "allow" but no reply queued ...
	judgedRefused           int // ... and replygate logged its fail action for it
	// From the relay's acceptance of a reply (its arrival at the sink) to
	// replygate's "reply sent" line, logged once the outbox has marked it
	// done: a kill -9 in this window sends the reply again. For the
	// replies sent once.
	doneWindow     []time.Duration
	milterWarnings map[string]int
	timeouts       string // Postfix's milter_*_timeout
}

// finish stops the load, checks that replygate answers again, waits
// until Postfix's queue and replygate's outbox are empty, stops replygate
// with SIGTERM, and counts.
func (l *faultLab) finish(fault string, times faultTimes, began time.Time) faultResult {
	t := l.t
	t.Helper()
	l.stopLoad()
	l.loads.Wait()
	elapsed := time.Since(began)

	// The last instance judges and answers: the fault left it working.
	// A probe may still miss its verdict on a busy machine (Postfix's
	// milter timeouts are cut to 2 s in the stall test): up to 5 tries.
	probe := ""
	for try := 1; probe == ""; try++ {
		from, id := fmt.Sprintf("probe%d@remote.example", try), fmt.Sprintf("fault-probe-%d", try)
		if _, err := smtpSend(l.pf.Addr(mtalab.SMTPService), from, vacUser, pfMessage(id, from, vacUser)); err != nil {
			t.Fatalf("probe after the faults: %v", err)
		}
		m := l.sink.WaitMessageID(t, pfMsgID(id), 60*time.Second)
		switch tr := m.Values("X-Replygate-Verdict"); {
		case len(tr) == 1 && strings.HasPrefix(tr[0], "allow"):
			probe = from
		case try == 5:
			t.Fatalf("probe after the faults: X-Replygate-Verdict %q, want one allow (5 tries)", tr)
		}
	}
	l.sink.WaitFor(t, 60*time.Second, "the reply to the probe", func(m []mtalab.Message) bool {
		return len(repliesTo(m, probe)) > 0
	})

	l.waitQueueEmpty()
	db := l.openStore()
	defer db.Close()
	lease, _ := time.ParseDuration(l.size.lease)
	deadline := time.Now().Add(lease + 2*time.Minute)
	for {
		var n int
		err := db.QueryRow(`SELECT COUNT(*) FROM outbox`).Scan(&n)
		if err == nil && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox not empty %v after the load: %d replies, %v", lease+2*time.Minute, n, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	l.rg.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-l.rg.done:
		if code := l.rg.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("replygate exited %d after SIGTERM, want 0", code)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("replygate did not stop within 60s of SIGTERM")
	}

	r := faultResult{fault: fault, times: times, elapsed: elapsed}
	r.timeouts = l.milterTimeouts()
	l.countMessages(&r)
	l.countReplies(&r, db)
	return r
}

// waitQueueEmpty waits until Postfix has delivered everything it
// accepted: its queue is empty and its log has caught up.
func (l *faultLab) waitQueueEmpty() {
	t := l.t
	t.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	flushed := false
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		q, err := l.pf.Queue(ctx)
		cancel()
		if err == nil && strings.Contains(q, "Mail queue is empty") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Postfix queue not empty after 10 minutes: %v\n%s", err, q)
		}
		if !flushed && time.Until(deadline) < 8*time.Minute {
			// Something was deferred: try it now rather than at the backoff.
			l.pf.Flush(context.Background())
			flushed = true
		}
		time.Sleep(500 * time.Millisecond)
	}
	// postlogd writes asynchronously: wait until the log names as many
	// deliveries as the sink has originals.
	deadline = time.Now().Add(30 * time.Second)
	for {
		sent := len(maillogSent.FindAllStringSubmatch(l.pf.Log(), -1))
		orig := 0
		for _, m := range l.sink.Messages() {
			if !isReply(m) {
				orig++
			}
		}
		if sent >= orig || time.Now().After(deadline) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// openStore opens replygate's store for counting: its reply log says
// whose reply was queued, its outbox what is left to send.
func (l *faultLab) openStore() *sql.DB {
	var (
		db  *sql.DB
		err error
	)
	if l.dsn != "" {
		db, err = sql.Open("pgx", l.dsn)
	} else {
		db, err = sql.Open("sqlite", filepath.Join(l.dir, "state", "replygate.db"))
	}
	if err != nil {
		l.t.Fatal(err)
	}
	return db
}

// milterTimeouts is what Postfix ran with.
func (l *faultLab) milterTimeouts() string {
	postconf, err := mtalab.LookPath("postconf")
	if err != nil {
		return "?"
	}
	names := []string{"milter_connect_timeout", "milter_command_timeout", "milter_content_timeout", "milter_default_action"}
	out, err := exec.Command(postconf, append([]string{"-c", l.pf.ConfigDir}, names...)...).Output()
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(strings.ReplaceAll(string(out), " = ", "=")), " ")
}

var (
	// qmgr: "4AbC123: from=<load@source.example>, size=1234, nrcpt=1 (queue active)"
	maillogQueued = regexp.MustCompile(`postfix/qmgr\[\d+\]: ([0-9A-Za-z]+): from=<[^>]*>, size=\d+, nrcpt=\d+ \(queue active\)`)
	// smtp: "4AbC123: to=<1r0@load.example>, relay=…, status=sent (250 …)"
	maillogSent    = regexp.MustCompile(`postfix/smtp\[\d+\]: ([0-9A-Za-z]+): to=<[^>]*>,.* status=sent `)
	maillogWarning = regexp.MustCompile(`postfix/(\w+)\[\d+\]: (?:[0-9A-Za-z]+: )?warning: ((?i).*milter.*)`)
	// What varies between otherwise equal warnings.
	warningNoise = regexp.MustCompile(`\b(127\.0\.0\.1:\d+|[0-9A-F]{8,}|\d+)\b`)
)

func isReply(m mtalab.Message) bool {
	return m.From == "" && m.Get("Auto-Submitted") == "auto-replied"
}

// countMessages reads Postfix's log and the sink.
func (l *faultLab) countMessages(r *faultResult) {
	t := l.t
	log := l.pf.Log()
	// Counted per queue id, not as a set: Postfix's short queue ids
	// (inode and microseconds) come round again within a long run, so
	// one id may name two messages minutes apart.
	queued, sent := map[string]int{}, map[string]int{}
	for _, m := range maillogQueued.FindAllStringSubmatch(log, -1) {
		queued[m[1]]++
		r.accepted++
	}
	for _, m := range maillogSent.FindAllStringSubmatch(log, -1) {
		sent[m[1]]++
		r.delivered++
	}
	for q, n := range queued {
		if sent[q] < n {
			r.lost += n - sent[q]
			t.Errorf("queue id %s: accepted by Postfix %d times, delivered %d times", q, n, sent[q])
		}
	}
	r.milterWarnings = map[string]int{}
	for _, m := range maillogWarning.FindAllStringSubmatch(log, -1) {
		r.milterWarnings[m[1]+": "+warningNoise.ReplaceAllString(m[2], "N")]++
	}

	l.bulk.mu.Lock()
	r.bulkRuns, r.bulkAborted = l.bulk.runs, len(l.bulk.aborted)
	for _, a := range l.bulk.aborted {
		t.Logf("smtp-source gave up: %s", a)
	}
	l.bulk.mu.Unlock()
	l.vac.mu.Lock()
	r.vacSenders, r.vacTempfails, r.vacErrors = len(l.vac.accepted), l.vac.tempfails, len(l.vac.errs)
	for _, e := range l.vac.errs {
		t.Logf("vacation sender: %s", e)
	}
	accepted := l.vac.accepted
	l.vac.mu.Unlock()

	seen := map[string]int{} // envelope recipient (bulk) or sender (vacation) → copies
	for _, m := range l.sink.Messages() {
		if isReply(m) {
			continue
		}
		r.atSink++
		key, bulk := m.From, false
		if len(m.To) == 1 && strings.HasSuffix(m.To[0], "@load.example") {
			key, bulk = m.To[0], true
		}
		if seen[key]++; seen[key] > 1 {
			r.deliveredTwice++
			continue
		}
		if len(m.Values("X-Replygate-Verdict")) == 0 {
			r.noVerdict++
			if bulk {
				r.noVerdictBulk++
			} else {
				r.noVerdictVac++
			}
		}
	}
	for from, qid := range accepted {
		if seen[from] == 0 {
			t.Errorf("vacation sender %s: Postfix accepted its message (queue id %s), the sink never got it", from, qid)
		}
	}
	if r.atSink != r.delivered {
		t.Errorf("%d originals at the sink, Postfix logged %d deliveries", r.atSink, r.delivered)
	}
	if r.deliveredTwice > 0 {
		t.Errorf("%d messages delivered more than once", r.deliveredTwice)
	}
}

// countReplies compares the replies at the sink with the store's reply
// log: one reply for each sender whose reply was queued, none for others.
func (l *faultLab) countReplies(r *faultResult, db *sql.DB) {
	t := l.t
	rows, err := db.Query(`SELECT sender FROM reply_log WHERE user_addr = '` + vacUser + `'`)
	if err != nil {
		t.Fatal(err)
	}
	queued := map[string]bool{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		queued[s] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	r.repliesQueued = len(queued)

	// What every instance logged: the fail action per queue id, and when
	// each reply was first marked done.
	refused := map[string]bool{}
	doneAt := map[string]time.Time{}
	for _, d := range l.all {
		for _, rec := range d.records() {
			switch rec["msg"] {
			case "responder overloaded, applying fail action", "responder refused message":
				refused[fmt.Sprint(rec["queue_id"])] = true
			case "reply sent":
				rcpt := fmt.Sprint(rec["rcpt"])
				at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(rec["time"]))
				if prev, seen := doneAt[rcpt]; err == nil && (!seen || at.Before(prev)) {
					doneAt[rcpt] = at
				}
			}
		}
	}
	msgs := l.sink.Messages()
	got := map[string][]time.Time{} // rcpt → arrivals of its replies
	for _, m := range replies(msgs) {
		r.replies++
		rcpt := strings.Join(m.To, ",")
		got[rcpt] = append(got[rcpt], m.At)
	}
	for rcpt, arrivals := range got {
		if at, ok := doneAt[rcpt]; ok && len(arrivals) == 1 {
			r.doneWindow = append(r.doneWindow, at.Sub(arrivals[0]))
		}
	}
	for s := range queued {
		switch arrivals := got[s]; {
		case len(arrivals) == 0:
			r.repliesLost++
			t.Errorf("reply to %s: queued, never sent", s)
		case len(arrivals) > 1:
			r.repliesDup++
			if k, ok := r.times.killedBeforeDone(arrivals[0], doneAt[s]); ok {
				// The known window: the relay had the reply, the instance
				// was killed before it marked it done, and the next one
				// sent it again after the lease. Counted and reported.
				r.repliesDupKill++
				t.Logf("reply to %s: sent %d times; the relay took the first at %s, the instance was killed %v later, before it marked the reply done",
					s, len(arrivals), arrivals[0].Format("15:04:05.000000"), k.Sub(arrivals[0]).Round(time.Microsecond))
				continue
			}
			t.Errorf("reply to %s: sent %d times (at %v), first marked done at %v", s, len(arrivals), arrivals, doneAt[s])
		}
	}
	for s, arrivals := range got {
		if !queued[s] {
			r.repliesUnexpected += len(arrivals)
			t.Errorf("%d replies to %s, whose reply was never queued", len(arrivals), s)
		}
	}
	l.vac.mu.Lock()
	qids := maps.Clone(l.vac.accepted)
	l.vac.mu.Unlock()
	for _, m := range msgs {
		if isReply(m) || len(m.To) != 1 || m.To[0] != vacUser || strings.HasPrefix(m.From, "probe") {
			continue
		}
		tr := m.Values("X-Replygate-Verdict")
		switch {
		case len(tr) == 0 && queued[m.From]:
			r.noVerdictReplied++
		case len(tr) > 0 && strings.HasPrefix(tr[0], "allow") && !queued[m.From]:
			r.judgedNoReply++
			if refused[qids[m.From]] {
				r.judgedRefused++
			}
		case len(tr) > 0 && !strings.HasPrefix(tr[0], "allow"):
			t.Errorf("vacation sender %s: verdict %q, want allow", m.From, tr[0])
		}
	}
}

// report logs the figures RELIABILITY.md shows.
func (r faultResult) report(t *testing.T) {
	t.Helper()
	var durs []string
	for _, d := range r.times.durs {
		durs = append(durs, d.Round(10*time.Millisecond).String())
	}
	var warns []string
	for w, n := range r.milterWarnings {
		warns = append(warns, fmt.Sprintf("%6d  %s", n, w))
	}
	sort.Sort(sort.Reverse(sort.StringSlice(warns)))
	slices.Sort(r.doneWindow)
	pct := func(p int) time.Duration {
		if len(r.doneWindow) == 0 {
			return 0
		}
		return r.doneWindow[(len(r.doneWindow)-1)*p/100].Round(100 * time.Microsecond)
	}
	t.Logf(`fault %s: %d events over %v of load; unreachable %v in all, longest %v (%s)
  Postfix: %s
  messages: %d accepted by Postfix (%d smtp-source runs, %d gave up; %d vacation senders, %d 4xx retried, %d errors), %d delivered, lost %d, delivered twice %d
  without a verdict: %d of %d (%d smtp-source, %d vacation)
  replies: %d queued, %d sent, lost %d, duplicated %d (%d by a kill between the relay's acceptance and done), unexpected %d; vacation messages with no verdict but a queued reply %d, judged allow with no reply queued %d (%d with the fail action logged)
  relay's acceptance to reply marked done: median %v, p99 %v, max %v (%d replies sent once)
  Postfix milter warnings:
%s`,
		r.fault, r.times.n, r.elapsed.Round(time.Second), r.times.total.Round(10*time.Millisecond), r.times.max.Round(10*time.Millisecond), strings.Join(durs, " "),
		r.timeouts,
		r.accepted, r.bulkRuns, r.bulkAborted, r.vacSenders, r.vacTempfails, r.vacErrors, r.delivered, r.lost, r.deliveredTwice,
		r.noVerdict, r.atSink, r.noVerdictBulk, r.noVerdictVac,
		r.repliesQueued, r.replies, r.repliesLost, r.repliesDup, r.repliesDupKill, r.repliesUnexpected, r.noVerdictReplied, r.judgedNoReply, r.judgedRefused,
		pct(50), pct(99), pct(100), len(r.doneWindow),
		strings.Join(warns, "\n"))
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// jitter returns d ± 40%, so faults land at different points of a session.
func jitter(d time.Duration) time.Duration {
	return d*6/10 + rand.N(d*8/10+1)
}

// TestFaultKill: replygate is killed with kill -9 and restarted on the
// same state and milter address, 3 times in the suite and 10 in the full
// run, under load.
func TestFaultKill(t *testing.T) {
	size := faultSizeOf(t)
	kills, every := 3, 1500*time.Millisecond
	downs := []time.Duration{0, 300 * time.Millisecond, time.Second}
	if size.full {
		kills, every = 10, 6*time.Second
		downs = []time.Duration{0, 200 * time.Millisecond, time.Second, 3 * time.Second, 500 * time.Millisecond}
	} else {
		t.Parallel()
	}
	l := newFaultLab(t, size, "", "accept", "")
	began := time.Now()
	l.startLoad()
	times := faultTimes{kill: true}
	for i := range kills {
		time.Sleep(jitter(every))
		start := time.Now()
		l.kill()
		time.Sleep(downs[i%len(downs)])
		l.start()
		times.add(start, time.Since(start))
	}
	time.Sleep(every)
	r := l.finish("kill -9", times, began)
	r.report(t)
}

// TestFaultStall: replygate is stopped with SIGSTOP and resumed with
// SIGCONT under load. Postfix's milter timeouts decide what happens to
// the sessions that wait: in the suite they are cut to 2 s, 2 s and 4 s
// and the stalls last 1 s and 5 s; the full run keeps contrib's main.cf
// as it is (Postfix's defaults: 30 s to connect, 30 s a command, 300 s
// for the content) and stalls for 5 s, 35 s and 310 s, longer than each.
func TestFaultStall(t *testing.T) {
	size := faultSizeOf(t)
	stalls := []time.Duration{time.Second, 5 * time.Second}
	extra := "milter_connect_timeout = 2s\nmilter_command_timeout = 2s\nmilter_content_timeout = 4s\n"
	every := 2 * time.Second
	if size.full {
		stalls, extra, every = []time.Duration{5 * time.Second, 35 * time.Second, 310 * time.Second}, "", 10*time.Second
	} else {
		t.Parallel()
	}
	l := newFaultLab(t, size, "", "accept", extra)
	began := time.Now()
	l.startLoad()
	var times faultTimes
	for _, d := range stalls {
		time.Sleep(jitter(every))
		start := time.Now()
		if err := l.rg.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(d)
		if err := l.rg.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		times.add(start, time.Since(start))
	}
	time.Sleep(2 * every)
	r := l.finish("SIGSTOP/SIGCONT", times, began)
	r.report(t)
}

// TestFaultStore: replygate's store, a private PostgreSQL cluster, is
// stopped and started under load. With fail_action "accept" (the
// default) a message judged while the store is down flows on without a
// reply; with "tempfail" Postfix answers 4xx, the sender retries, and the
// retry is answered once the store is back.
func TestFaultStore(t *testing.T) {
	size := faultSizeOf(t)
	outages := []time.Duration{3 * time.Second}
	every := 2 * time.Second
	if size.full {
		outages, every = []time.Duration{5 * time.Second, 30 * time.Second, 90 * time.Second}, 10*time.Second
	} else {
		t.Parallel()
	}
	for _, action := range []string{"accept", "tempfail"} {
		t.Run(action, func(t *testing.T) {
			if !size.full {
				t.Parallel()
			}
			pg := mtalab.StartPostgres(t)
			l := newFaultLab(t, size, pg.DSN(), action, "")
			began := time.Now()
			l.startLoad()
			var times faultTimes
			for _, d := range outages {
				time.Sleep(jitter(every))
				start := time.Now()
				pg.Stop(t)
				time.Sleep(d)
				pg.Start(t)
				times.add(start, time.Since(start))
			}
			time.Sleep(2 * every)
			r := l.finish("PostgreSQL stopped, fail_action "+action, times, began)
			r.report(t)
			if action == "tempfail" && r.judgedNoReply > 0 {
				t.Errorf("fail_action tempfail: %d messages judged allow went without a reply", r.judgedNoReply)
			}
		})
	}
}
