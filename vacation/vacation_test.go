package vacation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/replygate/replygate/internal/mtalab"
	"github.com/replygate/replygate/vacation/compose"
	"github.com/replygate/replygate/vacation/dkimsign"
	"github.com/replygate/replygate/vacation/store"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func openStore(t *testing.T) store.Store {
	t.Helper()
	s, err := store.OpenSQLite(filepath.Join(t.TempDir(), "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func message(from, id string, rcpts ...string) Message {
	return Message{MailFrom: from, Rcpts: rcpts, Header: []compose.Field{
		{Name: "Subject", Value: "hello"}, {Name: "Message-ID", Value: "<" + id + "@example.org>"}}}
}

func TestResponderOncePerPeriod(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	clk := &clock{now: time.Date(2026, 12, 24, 10, 0, 0, 0, time.UTC)}
	if _, err := st.PutVacation(ctx, store.Vacation{Address: "bob@example.com", Aliases: []string{"robert@example.com"},
		Body: "Away.", IntervalDays: 2, End: time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	out := &fakeOutbox{room: 100}
	r := NewResponder(st, Config{}, quiet, clk.Now, out)
	steps := []struct {
		name    string
		advance time.Duration
		msg     Message
		queued  uint64 // total so far
	}{
		{"first message is answered", 0, message("alice@example.org", "1", "bob@example.com"), 1},
		{"second within the interval is not", time.Hour, message("alice@example.org", "2", "bob@example.com"), 1},
		{"via an alias, same period", time.Hour, message("alice@example.org", "3", "Robert@EXAMPLE.com"), 1},
		{"another sender is", 0, message("carol@example.org", "4", "bob@example.com"), 2},
		{"nobody on vacation", 0, message("alice@example.org", "5", "dave@example.com"), 2},
		{"after the interval, again", 48 * time.Hour, message("alice@example.org", "6", "bob@example.com"), 3},
		{"the user's own mail, never", 0, message("bob@example.com", "6a", "bob@example.com"), 3},
		{"nor an alias's", 0, message("ROBERT@example.com", "6b", "bob@example.com"), 3},
		{"after the end, never", 7 * 24 * time.Hour, message("erin@example.org", "7", "bob@example.com"), 3},
	}
	for _, s := range steps {
		clk.Add(s.advance)
		if err := r.Offer(ctx, s.msg); err != nil {
			t.Fatalf("%s: Offer: %v", s.name, err)
		}
		if got := r.Counts.Queued.Load(); got != s.queued {
			t.Errorf("%s: %d replies queued, want %d", s.name, got, s.queued)
		}
	}
	if n, _ := st.OutboxLen(ctx); n != 3 || out.queued != 3 {
		t.Errorf("outbox %d, told of %d; want 3 and 3", n, out.queued)
	}
	if r.Counts.Own.Load() != 2 {
		t.Errorf("own %d, want 2", r.Counts.Own.Load())
	}
	if r.Counts.Inactive.Load() != 1 || r.Counts.Duplicate.Load() != 2 {
		t.Errorf("inactive %d, duplicate %d; want 1 and 2", r.Counts.Inactive.Load(), r.Counts.Duplicate.Load())
	}
}

// TestNewTextNewPeriod: changing the vacation text starts a new period
// (RFC 5230 :handle), so the sender is told the new text.
func TestNewTextNewPeriod(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	clk := &clock{now: time.Date(2026, 12, 24, 10, 0, 0, 0, time.UTC)}
	r := NewResponder(st, Config{}, quiet, clk.Now, nil)
	for i, body := range []string{"Away.", "Away.", "Away until Monday."} {
		if _, err := st.PutVacation(ctx, store.Vacation{Address: "bob@example.com", Body: body, IntervalDays: 7}); err != nil {
			t.Fatal(err)
		}
		if err := r.Offer(ctx, message("alice@example.org", "x", "bob@example.com")); err != nil {
			t.Fatal(err)
		}
		if want := []uint64{1, 1, 2}[i]; r.Counts.Queued.Load() != want {
			t.Errorf("after text %d: %d queued, want %d", i, r.Counts.Queued.Load(), want)
		}
	}
}

func TestOutbox(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	sink := mtalab.NewSink(t)
	clk := &clock{now: time.Now()}
	o := NewOutbox(st, OutboxConfig{Relay: sink.Addr(), Poll: 20 * time.Millisecond, MaxTries: 3}, quiet, clk.Now)
	queue := func(user, rcpt string) {
		t.Helper()
		ok, err := st.ReserveAndEnqueue(ctx, store.Reservation{User: user, Sender: rcpt, Version: 1, Interval: time.Hour, Now: clk.Now()},
			store.Reply{User: user, Rcpt: rcpt, Message: []byte("Subject: away\r\n\r\nAway.\r\n"), NextTry: clk.Now(), Created: clk.Now()})
		if err != nil || !ok {
			t.Fatalf("queue: %v %v", ok, err)
		}
	}
	queue("bob@example.com", "alice@example.org")
	queue("bob@example.com", "550@example.org") // refused for good: dropped
	queue("bob@example.com", "451@example.org") // refused for now: retried, then dropped after MaxTries

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { o.Run(runCtx); close(done) }()
	o.Wake()
	sink.WaitFor(t, 5*time.Second, "the reply to alice", func(m []mtalab.Message) bool { return len(m) == 1 })
	deadline := time.Now().Add(10 * time.Second)
	for o.Dropped.Load() < 1 || o.Retried.Load() < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no drop and retry within 10s: dropped %d retried %d", o.Dropped.Load(), o.Retried.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Let the retries come due (5 s, then 10 s of back-off), one at a
	// time: the clock moves only once the last attempt has an outcome, so
	// it never outruns a claim's lease while a delivery is under way.
	outcomes := func() uint64 { return o.Retried.Load() + o.Dropped.Load() }
	for o.Dropped.Load() < 2 {
		prev := outcomes()
		clk.Add(time.Minute)
		o.Wake()
		for outcomes() == prev {
			if time.Now().After(deadline) {
				t.Fatalf("the 451 reply was not retried or dropped within 10s: retried %d dropped %d", o.Retried.Load(), o.Dropped.Load())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	stop()
	<-done
	m := sink.Messages()
	if len(m) != 1 || m[0].From != "" || m[0].To[0] != "alice@example.org" {
		t.Errorf("sink got %+v, want one reply from <> to alice", m)
	}
	if n, _ := st.OutboxLen(ctx); n != 0 {
		t.Errorf("outbox holds %d, want 0", n)
	}
	if o.Sent.Load() != 1 || o.Dropped.Load() != 2 || o.Retried.Load() != 2 {
		t.Errorf("sent %d dropped %d retried %d; want 1, 2, 2", o.Sent.Load(), o.Dropped.Load(), o.Retried.Load())
	}
}

// fakeOutbox has room for room replies.
type fakeOutbox struct{ room, queued int }

func (f *fakeOutbox) HasRoom() bool { return f.queued < f.room }
func (f *fakeOutbox) Queued()       { f.queued++ }

// TestOutboxBound: past the outbox's bound, replies are refused and
// counted, and nothing more is queued.
func TestOutboxBound(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	clk := &clock{now: time.Date(2026, 12, 24, 10, 0, 0, 0, time.UTC)}
	if _, err := st.PutVacation(ctx, store.Vacation{Address: "bob@example.com", Body: "Away.", IntervalDays: 7}); err != nil {
		t.Fatal(err)
	}
	o := NewOutbox(st, OutboxConfig{Relay: "127.0.0.1:1", MaxQueued: 2}, quiet, clk.Now)
	if err := o.Load(ctx); err != nil {
		t.Fatal(err)
	}
	r := NewResponder(st, Config{}, quiet, clk.Now, o)
	for i, want := range []error{nil, nil, ErrOutboxFull, ErrOutboxFull} {
		err := r.Offer(ctx, message(fmt.Sprintf("s%d@example.org", i), "x", "bob@example.com"))
		if !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Errorf("Offer %d = %v, want %v", i, err, want)
		}
	}
	if n, _ := st.OutboxLen(ctx); n != 2 || r.Counts.Full.Load() != 2 {
		t.Errorf("outbox %d, refused %d; want 2 and 2", n, r.Counts.Full.Load())
	}
	// A restart counts what is queued: the bound holds across it.
	o2 := NewOutbox(st, OutboxConfig{Relay: "127.0.0.1:1", MaxQueued: 2}, quiet, clk.Now)
	if err := o2.Load(ctx); err != nil || o2.HasRoom() {
		t.Errorf("after Load: HasRoom = %v (%v), want false", o2.HasRoom(), err)
	}
}

// TestSenderAuthAndDKIM: with a trusted authserv-id only authenticated
// senders are answered, and a configured key signs every reply.
func TestSenderAuthAndDKIM(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	clk := &clock{now: time.Date(2026, 12, 24, 10, 0, 0, 0, time.UTC)}
	if _, err := st.PutVacation(ctx, store.Vacation{Address: "bob@example.com", Body: "Away.", IntervalDays: 7}); err != nil {
		t.Fatal(err)
	}
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(t.TempDir(), "dkim.pem")
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := dkimsign.Load(keyPath, "example.com", "rg")
	if err != nil {
		t.Fatal(err)
	}
	r := NewResponder(st, Config{TrustedAuthservID: "mx.example.com", Signer: signer}, quiet, clk.Now, nil)
	offer := func(from, authres string) {
		t.Helper()
		m := message(from, "x", "bob@example.com")
		if authres != "" {
			m.Header = append([]compose.Field{{Name: "Authentication-Results", Value: authres}}, m.Header...)
		}
		if err := r.Offer(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	offer("alice@example.org", "mx.example.com; dkim=pass header.d=example.org; spf=pass smtp.mailfrom=example.org")
	offer("mallory@example.org", "mx.example.com; spf=fail smtp.mailfrom=example.org; dkim=none")
	offer("eve@example.org", "evil.example; dkim=pass header.d=example.org") // another authserv-id: not trusted
	offer("trent@example.org", "")
	if q, u := r.Counts.Queued.Load(), r.Counts.Unauthenticated.Load(); q != 1 || u != 3 {
		t.Errorf("queued %d, unauthenticated %d; want 1 and 3", q, u)
	}
	got, err := st.Claim(ctx, clk.Now(), time.Minute, 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("Claim = %d, %v", len(got), err)
	}
	if got[0].Rcpt != "alice@example.org" || !bytes.HasPrefix(got[0].Message, []byte("DKIM-Signature:")) {
		t.Errorf("queued reply to %s starts %q, want alice and a DKIM-Signature", got[0].Rcpt, got[0].Message[:min(40, len(got[0].Message))])
	}
}

// flakyDone is a store whose Done fails, as when PostgreSQL is down,
// until fails runs out.
type flakyDone struct {
	store.Store
	mu    sync.Mutex
	fails int
	calls int
}

func (f *flakyDone) Done(ctx context.Context, id, claim int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fails > 0 {
		f.fails--
		return errors.New("connection refused")
	}
	return f.Store.Done(ctx, id, claim)
}

// TestOutboxDoneOutage: the store fails just after a reply was sent.
// The outbox keeps trying to mark it done while its lease holds, so the
// reply is neither left queued nor sent again.
func TestOutboxDoneOutage(t *testing.T) {
	ctx := context.Background()
	st := &flakyDone{Store: openStore(t), fails: 2}
	sink := mtalab.NewSink(t)
	clk := &clock{now: time.Now()}
	o := NewOutbox(st, OutboxConfig{Relay: sink.Addr(), Poll: 20 * time.Millisecond}, quiet, clk.Now)
	ok, err := st.ReserveAndEnqueue(ctx, store.Reservation{User: "bob@example.com", Sender: "alice@example.org", Version: 1, Interval: time.Hour, Now: clk.Now()},
		store.Reply{Message: []byte("Subject: away\r\n\r\nAway.\r\n")})
	if err != nil || !ok {
		t.Fatalf("queue: %v %v", ok, err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { o.Run(runCtx); close(done) }()
	sink.WaitN(t, 1, 5*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := st.OutboxLen(ctx); n != 0; n, _ = st.OutboxLen(ctx) {
		if time.Now().After(deadline) {
			t.Fatalf("the sent reply is still queued after 10s (%d Done calls)", st.calls)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	<-done
	st.mu.Lock()
	calls := st.calls
	st.mu.Unlock()
	if calls != 3 || o.Sent.Load() != 1 || len(sink.Messages()) != 1 {
		t.Errorf("Done called %d times, %d sent, %d at the sink; want 3, 1, 1", calls, o.Sent.Load(), len(sink.Messages()))
	}
}

// TestOutboxLease: a send never outlives its lease.
func TestOutboxLease(t *testing.T) {
	for _, tt := range []struct {
		name           string
		in             OutboxConfig
		lease, timeout time.Duration
	}{
		{"defaults", OutboxConfig{}, 130 * time.Second, time.Minute},
		{"short lease", OutboxConfig{Lease: 4 * time.Second}, 4 * time.Second, 2 * time.Second},
		{"long lease", OutboxConfig{Lease: time.Hour}, time.Hour, time.Minute},
		{"timeout sets the lease", OutboxConfig{Timeout: 10 * time.Second}, 30 * time.Second, 10 * time.Second},
		{"lease caps the timeout", OutboxConfig{Lease: 10 * time.Second, Timeout: time.Minute}, 10 * time.Second, 5 * time.Second},
	} {
		got := tt.in.withDefaults()
		if got.Lease != tt.lease || got.Timeout != tt.timeout {
			t.Errorf("%s: withDefaults() = lease %v, timeout %v; want %v, %v", tt.name, got.Lease, got.Timeout, tt.lease, tt.timeout)
		}
	}
}

// TestOutboxDoneBeforeQuit: a reply is marked done as soon as the relay
// has taken it (its answer to the end of DATA), not after QUIT. A crash
// between the two sends the reply again after a restart, so a relay
// slow to answer QUIT (here: never) must not widen that window.
func TestOutboxDoneBeforeQuit(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	atQuit := make(chan int, 1) // the outbox's length when QUIT came
	release := make(chan struct{})
	defer close(release)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tp := textproto.NewConn(c)
		tp.PrintfLine("220 relay.example ESMTP")
		for {
			line, err := tp.ReadLine()
			if err != nil {
				return
			}
			switch cmd, _, _ := strings.Cut(strings.ToUpper(line), " "); cmd {
			case "DATA":
				tp.PrintfLine("354 go ahead")
				if _, err := tp.ReadDotBytes(); err != nil {
					return
				}
				tp.PrintfLine("250 2.0.0 queued")
			case "QUIT":
				n, err := st.OutboxLen(ctx)
				if err != nil {
					n = -1
				}
				atQuit <- n
				<-release // no answer
				return
			default:
				tp.PrintfLine("250 ok")
			}
		}
	}()
	o := NewOutbox(st, OutboxConfig{Relay: ln.Addr().String(), Poll: 20 * time.Millisecond, Timeout: 10 * time.Second}, quiet, time.Now)
	ok, err := st.ReserveAndEnqueue(ctx, store.Reservation{User: "bob@example.com", Sender: "alice@example.org", Version: 1, Interval: time.Hour, Now: time.Now()},
		store.Reply{User: "bob@example.com", Rcpt: "alice@example.org", Message: []byte("Subject: away\r\n\r\nAway.\r\n"), NextTry: time.Now(), Created: time.Now()})
	if err != nil || !ok {
		t.Fatalf("queue: %v %v", ok, err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go o.Run(runCtx)
	select {
	case n := <-atQuit:
		if n != 0 {
			t.Errorf("outbox holds %d replies when QUIT reaches the relay, want 0: the sent reply is marked done only after QUIT", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no QUIT at the relay within 10s")
	}
}
