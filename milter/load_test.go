package milter

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/replygate/replygate/policy"
)

// TestLoad holds many slow sessions at once, as a busy MX with slow
// clients does: each session sends one header field a second, then its
// end of message. While they are held, more MTA connections than
// max_sessions arrive: they are answered per the fail action at once,
// the held sessions are served on, and nothing grows past the bounds.
// After the sessions end, goroutines and heap return to where they were.
//
// The suite runs 1,000 sessions × 3 fields (a few seconds).
// REPLYGATE_LOAD=full runs 1,000 sessions × 60 fields (a minute), and
// REPLYGATE_LOAD_SESSIONS=N changes the session count; the figures are
// logged (go test -v) and kept in RELIABILITY.md:
//
//	REPLYGATE_LOAD=full go test ./milter -run '^TestLoad$' -count=1 -v
func TestLoad(t *testing.T) {
	n, fields := 1000, 3
	if os.Getenv("REPLYGATE_LOAD") == "full" {
		fields = 60
	}
	if s := os.Getenv("REPLYGATE_LOAD_SESSIONS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("REPLYGATE_LOAD_SESSIONS=%q: want a session count", s)
		}
	}
	const extra, burst = 50, 500 // overflow sessions that negotiate, and idle connections
	// Each session is two descriptors here (client and server end).
	needFiles(t, uint64(2*(n+extra+burst)+256))

	p, err := policy.New(policy.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	srv := New(p, Config{MaxSessions: n, FailAction: FailTempfail, TraceHeader: true},
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
	}()
	client := gomilter.NewClientWithOptions("tcp", ln.Addr().String(), gomilter.ClientOptions{
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, ActionMask: gomilter.OptAddHeader})

	// The runtime keeps the descriptor of every goroutine that ever ran
	// for reuse (about 400 bytes each): grow that set to the test's peak
	// first, so that the baseline holds it and a true leak stands out.
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 2*(n+extra) + cap(srv.overload) + 64 {
		wg.Go(func() { <-release })
	}
	close(release)
	wg.Wait()

	base := measure()
	start := time.Now()
	// One goroutine plays every MTA connection: the client side holds no
	// goroutine per session, so the goroutine count is the server's.
	sessions := make([]*gomilter.ClientSession, 0, n)
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
	}()
	for i := range n {
		s, err := client.Session()
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		sessions = append(sessions, s)
		if err := startMessage(s, i); err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
	}
	opened := time.Since(start)
	waitFor(t, "every session to be live", func() bool { return srv.Metrics().Sessions.Load() == int64(n) })

	var held stats
	next := time.Now()
	for f := range fields {
		time.Sleep(time.Until(next))
		next = next.Add(time.Second)
		for i, s := range sessions {
			if _, err := s.HeaderField("X-Load", fmt.Sprintf("session %d field %d", i, f)); err != nil {
				t.Fatalf("session %d field %d: %v", i, f, err)
			}
		}
		if f == 0 {
			overflow(t, srv, client, ln.Addr().String(), n, extra, burst)
		}
		if f == fields-1 {
			held = measure()
		}
	}
	for i, s := range sessions {
		if _, err := s.HeaderField("To", fmt.Sprintf("rcpt%d@example.com", i)); err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
	}
	for i, s := range sessions {
		mods, act, err := s.End()
		if err != nil || act.Code != gomilter.ActAccept {
			t.Fatalf("session %d end of message: %v %v, want accept", i, act, err)
		}
		if len(mods) != 1 || mods[0].HeaderValue != "allow; direction=inbound; stamp=false" {
			t.Fatalf("session %d: added %+v, want the allow verdict", i, mods)
		}
	}
	if got := srv.Metrics().Messages.Load(); got != uint64(n) {
		t.Errorf("%d messages judged, want %d", got, n)
	}
	for _, s := range sessions {
		s.Close()
	}
	sessions = nil
	waitFor(t, "the sessions to end", func() bool { return srv.Metrics().Sessions.Load() == 0 })
	// Bounds per held session: the serving goroutine and go-milter's, and
	// a heap share far below what one message may carry (256 KiB).
	if g := held.goroutines - base.goroutines; g > 2*n+8 {
		t.Errorf("%d goroutines for %d sessions, want at most 2 each", g, n)
	}
	if h := (int64(held.heap) - int64(base.heap)) / int64(n); h > 32<<10 {
		t.Errorf("%d bytes of heap per held session, want under 32 KiB", h)
	}
	var after stats
	deadline := time.Now().Add(10 * time.Second)
	for {
		after = measure()
		if after.goroutines <= base.goroutines && after.heap <= base.heap+1<<20 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if after.goroutines > base.goroutines {
		t.Errorf("goroutines: %d after the sessions ended, %d before: a leak", after.goroutines, base.goroutines)
	}
	if after.heap > base.heap+1<<20 {
		t.Errorf("heap: %d KiB after the sessions ended, %d KiB before: a leak", after.heap>>10, base.heap>>10)
	}

	per := func(a, b uint64) float64 { return float64(int64(a)-int64(b)) / float64(n) / 1024 }
	t.Logf("%d sessions, each %d header fields one second apart, then To and end of message, in %v (opened in %v); GOMAXPROCS %d, %s, %s",
		n, fields, time.Since(start).Round(time.Millisecond), opened.Round(time.Millisecond), runtime.GOMAXPROCS(0), runtime.Version(), raceNote)
	t.Logf("held (at the last field): goroutines %d → %d (%.2f per session); heap %.1f → %.1f MiB (%.1f KiB per session); stacks %.1f → %.1f MiB (%.1f KiB per session); RSS %.1f → %.1f MiB (%.1f KiB per session)",
		base.goroutines, held.goroutines, float64(held.goroutines-base.goroutines)/float64(n),
		mib(base.heap), mib(held.heap), per(held.heap, base.heap),
		mib(base.stack), mib(held.stack), per(held.stack, base.stack),
		mib(base.rss), mib(held.rss), per(held.rss, base.rss))
	t.Logf("after the sessions ended: goroutines %d; heap %.1f MiB; stacks %.1f MiB; RSS %.1f MiB (after FreeOSMemory)",
		after.goroutines, mib(after.heap), mib(after.stack), mib(after.rss))
}

// overflow runs while n sessions hold every slot: extra more sessions get
// the fail action (tempfail) at CONNECT, a burst of idle connections is
// answered or closed without a session each, and the held sessions still
// count n.
func overflow(t *testing.T, srv *Server, client *gomilter.Client, addr string, n, extra, burst int) {
	t.Helper()
	before := srv.Metrics().Overloads.Load()
	g0 := runtime.NumGoroutine()
	for i := range extra {
		s, err := client.Session()
		if err != nil {
			t.Fatalf("overflow session %d: %v", i, err)
		}
		act, err := s.Conn("client.example.org", gomilter.FamilyInet, 40000, "192.0.2.9")
		s.Close()
		if err != nil || act.Code != gomilter.ActTempFail {
			t.Fatalf("overflow session %d: CONNECT answered %v %v, want tempfail", i, act, err)
		}
	}
	idle := make([]net.Conn, 0, burst)
	for range burst {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("burst: %v", err)
		}
		idle = append(idle, c)
	}
	// Each idle connection is either held by one of the bounded overload
	// answerers or closed at once.
	waitFor(t, "the burst to be counted", func() bool {
		return srv.Metrics().Overloads.Load() == before+uint64(extra+burst)
	})
	g := runtime.NumGoroutine()
	if live := srv.Metrics().Sessions.Load(); live != int64(n) {
		t.Errorf("%d sessions live during the overflow, want max_sessions %d", live, n)
	}
	if limit := g0 + cap(srv.overload) + 8; g > limit {
		t.Errorf("%d goroutines during a burst of %d connections, want at most %d", g, burst, limit)
	}
	closed := 0
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := bufio.NewReader(c).ReadByte(); err == io.EOF {
			closed++
		}
		c.Close()
	}
	t.Logf("overflow: %d sessions answered tempfail at CONNECT; of %d idle connections %d were closed at once and the rest held by at most %d overload answerers; %d goroutines at the peak",
		extra, burst, closed, cap(srv.overload), g)
}

// startMessage connects and starts a message: the MTA's side before the
// header, none of it answered (the replies were negotiated away).
func startMessage(s *gomilter.ClientSession, i int) error {
	if err := s.Macros(gomilter.CodeConn, "j", "mx.example.com", "{daemon_name}", "mx.example.com"); err != nil {
		return err
	}
	if _, err := s.Conn("client.example.org", gomilter.FamilyInet, uint16(1024+i%60000), "192.0.2.1"); err != nil {
		return err
	}
	if _, err := s.Mail(fmt.Sprintf("<sender%d@example.org>", i), nil); err != nil {
		return err
	}
	_, err := s.Rcpt(fmt.Sprintf("<rcpt%d@example.com>", i), nil)
	return err
}

type stats struct {
	goroutines       int
	heap, stack, rss uint64
}

// measure reads the process after a collection: live heap, goroutine
// stacks, resident memory.
func measure() stats {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return stats{goroutines: runtime.NumGoroutine(), heap: m.HeapAlloc, stack: m.StackInuse, rss: rss()}
}

// rss reads VmRSS from /proc; 0 where there is none.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// needFiles raises the open-file limit to want if the hard limit allows;
// otherwise the test skips, or fails under CI=true.
func needFiles(t *testing.T, want uint64) {
	t.Helper()
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		t.Fatal(err)
	}
	if l.Cur >= want {
		return
	}
	if l.Max >= want {
		l.Cur = want
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err == nil {
			return
		}
	}
	msg := fmt.Sprintf("needs %d open files, the hard limit is %d (ulimit -Hn)", want, l.Max)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}
