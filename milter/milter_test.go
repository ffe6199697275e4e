package milter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/replygate/replygate/policy"
)

// syncBuffer collects log lines from concurrent sessions.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// records returns the JSON log records with the given message.
func (b *syncBuffer) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.b.String()), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

type testServer struct {
	srv     *Server
	network string
	addr    string
	logs    *syncBuffer
	done    chan error
}

func startServer(t *testing.T, network string, pc policy.Config, mc Config, r Responder) *testServer {
	t.Helper()
	p, err := policy.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	srv := New(p, mc, log, r)
	var ln net.Listener
	if network == "unix" {
		ln, err = Listen(Spec{"unix", filepath.Join(t.TempDir(), "m.sock")}, 0o600)
	} else {
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, network: ln.Addr().Network(), addr: ln.Addr().String(), logs: logs, done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-ts.done; !errors.Is(err, gomilter.ErrServerClosed) {
			t.Errorf("Serve() = %v, want ErrServerClosed", err)
		}
	})
	return ts
}

// session opens a client session as Postfix would, but with the masks cut
// to what go-milter's Client accepts from a version 2 milter.
func (ts *testServer) session(t *testing.T) *gomilter.ClientSession {
	t.Helper()
	c := gomilter.NewClientWithOptions(ts.network, ts.addr, gomilter.ClientOptions{
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		ActionMask: gomilter.OptAddHeader, ProtocolMask: 0,
	})
	s, err := c.Session()
	if err != nil {
		t.Fatalf("Session: %v", err)
	}
	return s
}

type message struct {
	macros   []string // sent at MAIL
	from     string
	rcpts    []string
	header   [][2]string
	eomMacro []string // sent at EOM
}

// send runs one message through s and returns the fields added and the
// final action.
func send(t *testing.T, s *gomilter.ClientSession, m message) (map[string]string, gomilter.ActionCode) {
	t.Helper()
	if len(m.macros) > 0 {
		if err := s.Macros(gomilter.CodeMail, m.macros...); err != nil {
			t.Fatal(err)
		}
	}
	if act, err := s.Mail(m.from, nil); err != nil || act.Code != gomilter.ActContinue {
		t.Fatalf("Mail: %v %v", act, err)
	}
	for _, r := range m.rcpts {
		if act, err := s.Rcpt(r, nil); err != nil || act.Code != gomilter.ActContinue {
			t.Fatalf("Rcpt: %v %v", act, err)
		}
	}
	for _, h := range m.header {
		if _, err := s.HeaderField(h[0], h[1]); err != nil {
			t.Fatalf("HeaderField: %v", err)
		}
	}
	if _, err := s.HeaderEnd(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BodyChunk([]byte("hello\r\n")); err != nil {
		t.Fatal(err)
	}
	if len(m.eomMacro) > 0 {
		if err := s.Macros(gomilter.CodeEOB, m.eomMacro...); err != nil {
			t.Fatal(err)
		}
	}
	mods, act, err := s.End()
	if err != nil {
		t.Fatalf("End: %v", err)
	}
	added := map[string]string{}
	for _, m := range mods {
		if m.Code != gomilter.ActAddHeader {
			t.Errorf("unexpected modification %c", m.Code)
		}
		added[m.HeaderName] = m.HeaderValue
	}
	return added, act.Code
}

func machineConfig() policy.Config {
	c := policy.DefaultConfig()
	c.MachineSenders = []string{"jenkins@ci.example.com"}
	c.MachineLogins = []string{"robot-*"}
	c.MachineNetworks = []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}
	return c
}

var personHeader = [][2]string{{"From", "Alice <alice@example.com>"}, {"To", "bob@example.net"}, {"Subject", "hi"}}

// TestSeveralMessagesOneSession proves that the second and third message
// of one session are judged with their own envelope and the connection's
// data, although go-milter swaps its backend after every message.
func TestSeveralMessagesOneSession(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			ts := startServer(t, network, machineConfig(), Config{TraceHeader: true}, nil)
			s := ts.session(t)
			defer s.Close()
			if err := s.Macros(gomilter.CodeConn, "{daemon_name}", "ORIGINATING", "j", "mx.example.com"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Conn("client.example.com", gomilter.FamilyInet, 40123, "10.9.0.5"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Helo("client.example.com"); err != nil {
				t.Fatal(err)
			}
			msgs := []struct {
				m         message
				wantTrace string
			}{
				{message{macros: []string{"i", "Q1"}, from: "<jenkins@ci.example.com>", rcpts: []string{"<bob@example.net>"}, header: personHeader},
					"allow; direction=outbound; stamp=true"},
				{message{macros: []string{"{auth_authen}", "robot-grafana"}, from: "<alerts@example.com>", rcpts: []string{"<bob@example.net>"}, header: personHeader, eomMacro: []string{"i", "Q2"}},
					"allow; direction=outbound; stamp=true"},
				{message{from: "<alice@example.com>", rcpts: []string{"<carol@example.net>"}, header: personHeader, eomMacro: []string{"i", "Q3"}},
					"suppress; reasons=not-addressed; direction=outbound; stamp=true"},
			}
			for i, tt := range msgs {
				added, act := send(t, s, tt.m)
				if act != gomilter.ActAccept {
					t.Errorf("message %d: action %c, want accept", i+1, act)
				}
				if got := added[TraceHeader]; got != tt.wantTrace {
					t.Errorf("message %d: %s = %q, want %q", i+1, TraceHeader, got, tt.wantTrace)
				}
				if added["X-Allow-Auto-Reply"] != "no" || added["Auto-Submitted"] != "auto-generated" {
					t.Errorf("message %d: added %v, want the stamp", i+1, added)
				}
			}
			recs := ts.logs.records(t, "verdict")
			if len(recs) != 3 {
				t.Fatalf("%d verdict log lines, want 3", len(recs))
			}
			wantReasons := []string{"[machine-sender machine-client]", "[machine-login machine-client]", "[machine-client]"}
			for i, r := range recs {
				if want := "Q" + string(rune('1'+i)); r["queue_id"] != want {
					t.Errorf("message %d logged queue_id %v, want %s", i+1, r["queue_id"], want)
				}
				if got := fmtList(r["stamp_reasons"]); got != wantReasons[i] {
					t.Errorf("message %d stamp_reasons %s, want %s", i+1, got, wantReasons[i])
				}
				if r["direction"] != "outbound" {
					t.Errorf("message %d direction %v, want outbound", i+1, r["direction"])
				}
			}
		})
	}
}

func fmtList(v any) string {
	l, _ := v.([]any)
	var s []string
	for _, x := range l {
		s = append(s, x.(string))
	}
	return "[" + strings.Join(s, " ") + "]"
}

func TestInboundNotStamped(t *testing.T) {
	ts := startServer(t, "tcp", machineConfig(), Config{}, nil)
	s := ts.session(t)
	defer s.Close()
	if _, err := s.Conn("mx.example.org", gomilter.FamilyInet, 40000, "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	added, act := send(t, s, message{from: "<jenkins@ci.example.com>", rcpts: []string{"<bob@example.net>"},
		header: [][2]string{{"List-Id", "<dev.example.org>"}, {"To", "bob@example.net"}}})
	if act != gomilter.ActAccept || len(added) != 0 {
		t.Errorf("inbound list mail: action %c, added %v; want accept, nothing added", act, added)
	}
	r := ts.logs.records(t, "verdict")
	if len(r) != 1 || r[0]["auto_reply"] != "suppress" || fmtList(r[0]["reasons"]) != "[list-header]" || r[0]["direction"] != "inbound" {
		t.Errorf("verdict log = %v, want inbound suppress [list-header]", r)
	}
}

// recorder is a Responder that keeps what it is offered.
type recorder struct {
	mu  sync.Mutex
	got []Inbound
	err error
}

func (r *recorder) Offer(_ context.Context, m Inbound) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, m)
	return r.err
}

func TestResponderOffered(t *testing.T) {
	rec := &recorder{}
	ts := startServer(t, "unix", policy.DefaultConfig(), Config{}, rec)
	s := ts.session(t)
	defer s.Close()
	hdr := [][2]string{{"From", "alice@example.org"}, {"To", "bob@example.com"}, {"Subject", "lunch"}}
	send(t, s, message{from: "<alice@example.org>", rcpts: []string{"<bob@example.com>", "<carol@example.com>"}, header: hdr})
	send(t, s, message{from: "<>", rcpts: []string{"<bob@example.com>"}, header: hdr}) // bounce: not offered
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.got) != 1 {
		t.Fatalf("Offer called %d times, want 1", len(rec.got))
	}
	m := rec.got[0]
	if m.MailFrom != "alice@example.org" || len(m.Rcpts) != 1 || m.Rcpts[0] != "bob@example.com" {
		t.Errorf("Offer(%+v): want from alice@example.org to [bob@example.com] (carol is not addressed)", m)
	}
	if m.Header.Get("Subject") != "lunch" {
		t.Errorf("offered header lost its Subject: %v", m.Header.Fields)
	}
}

// panicky fails inside end-of-message processing.
type panicky struct{}

func (panicky) Offer(context.Context, Inbound) error { panic("boom") }

func TestInternalErrorFailAction(t *testing.T) {
	for _, tt := range []struct {
		action FailAction
		want   gomilter.ActionCode
	}{{FailAccept, gomilter.ActAccept}, {FailTempfail, gomilter.ActTempFail}} {
		t.Run(string(tt.action), func(t *testing.T) {
			ts := startServer(t, "tcp", policy.DefaultConfig(), Config{FailAction: tt.action}, panicky{})
			s := ts.session(t)
			defer s.Close()
			_, act := send(t, s, message{from: "<alice@example.org>", rcpts: []string{"<bob@example.com>"}, header: [][2]string{{"To", "bob@example.com"}}})
			if act != tt.want {
				t.Errorf("EOM after internal error = %c, want %c", act, tt.want)
			}
			// The session survives: the next message is judged normally.
			_, act = send(t, s, message{from: "<>", rcpts: []string{"<bob@example.com>"}, header: [][2]string{{"To", "bob@example.com"}}})
			if act != gomilter.ActAccept {
				t.Errorf("next message = %c, want accept", act)
			}
			if n := ts.srv.Metrics().Errors.Load(); n != 1 {
				t.Errorf("Errors = %d, want 1", n)
			}
		})
	}
}

// rawConn dials the server for hand-made frames.
func (ts *testServer) rawConn(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial(ts.network, ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin reports whether the server closes c within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	return err == nil // io.Copy returns nil at EOF; a timeout is an error
}

// TestGarbage writes broken frames and idles, then shows the daemon still
// answers a real session.
func TestGarbage(t *testing.T) {
	ts := startServer(t, "tcp", policy.DefaultConfig(), Config{IdleTimeout: 300 * time.Millisecond}, nil)
	tests := []struct {
		name  string
		bytes []byte
	}{
		{"zero length", []byte{0, 0, 0, 0}},
		{"4 GiB length", []byte{0xff, 0xff, 0xff, 0xff, 'O'}},
		{"truncated frame", []byte{0, 0, 0, 100, 'O', 0, 0}},
		{"unknown command", []byte{0, 0, 0, 1, 'Z'}},
		{"connect too short", []byte{0, 0, 0, 2, 'C', 'x'}},
		{"idle", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ts.rawConn(t)
			if _, err := c.Write(tt.bytes); err != nil {
				t.Fatal(err)
			}
			if !closedWithin(c, 3*time.Second) {
				t.Errorf("%s: server kept the connection open", tt.name)
			}
		})
	}
	s := ts.session(t)
	defer s.Close()
	if _, act := send(t, s, message{from: "<a@example.org>", rcpts: []string{"<b@example.com>"}, header: [][2]string{{"To", "b@example.com"}}}); act != gomilter.ActAccept {
		t.Errorf("after garbage: action %c, want accept", act)
	}
	// The garbage sessions end just after their sockets close.
	waitFor(t, "the garbage sessions to end", func() bool { return ts.srv.Metrics().Sessions.Load() == 1 })
}

func TestOverload(t *testing.T) {
	for _, tt := range []struct {
		action FailAction
		want   gomilter.ActionCode
	}{{FailAccept, gomilter.ActAccept}, {FailTempfail, gomilter.ActTempFail}} {
		t.Run(string(tt.action), func(t *testing.T) {
			ts := startServer(t, "tcp", policy.DefaultConfig(), Config{MaxSessions: 1, FailAction: tt.action}, nil)
			first := ts.session(t) // holds the only slot
			defer first.Close()
			second := ts.session(t)
			act, err := second.Conn("c.example", gomilter.FamilyInet, 1234, "192.0.2.3")
			if err != nil {
				t.Fatalf("Conn on overloaded server: %v", err)
			}
			if act.Code != tt.want {
				t.Errorf("overloaded Conn = %c, want %c", act.Code, tt.want)
			}
			// The session that holds the slot is still served.
			if _, a := send(t, first, message{from: "<a@example.org>", rcpts: []string{"<b@example.com>"}, header: [][2]string{{"To", "b@example.com"}}}); a != gomilter.ActAccept {
				t.Errorf("first session after overload: %c, want accept", a)
			}
			if n := ts.srv.Metrics().Overloads.Load(); n != 1 {
				t.Errorf("Overloads = %d, want 1", n)
			}
		})
	}
}

// TestShutdownDrains starts a message, shuts down, and finishes the
// message: it must still be judged and stamped.
func TestShutdownDrains(t *testing.T) {
	ts := startServer(t, "tcp", machineConfig(), Config{}, nil)
	idle := ts.session(t) // between messages: closed at once
	busy := ts.session(t)
	if err := busy.Macros(gomilter.CodeMail, "{auth_authen}", "robot-x"); err != nil {
		t.Fatal(err)
	}
	if _, err := busy.Mail("<ci@example.com>", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := busy.Rcpt("<b@example.net>", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the server to start the message", func() bool { return ts.srv.inMessage() })

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- ts.srv.Shutdown(ctx)
	}()
	waitFor(t, "Shutdown to begin", ts.srv.closing.Load)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a message in flight", err)
	case <-time.After(100 * time.Millisecond): // it must keep waiting
	}
	if _, err := busy.HeaderField("Subject", "build"); err != nil {
		t.Fatal(err)
	}
	mods, act, err := busy.End()
	if err != nil || act.Code != gomilter.ActAccept || len(mods) != 2 {
		t.Fatalf("End during shutdown = %v %v %v, want accept with the stamp", mods, act, err)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown() = %v", err)
	}
	if _, _, err := idle.End(); err == nil {
		t.Errorf("session that was idle at Shutdown still answers")
	}
	if _, err := net.Dial(ts.network, ts.addr); err == nil {
		t.Errorf("server still accepts after Shutdown")
	}
}

func TestParseSpec(t *testing.T) {
	tests := []struct {
		in, network, addr, err string
	}{
		{"unix:/run/replygate/milter.sock", "unix", "/run/replygate/milter.sock", ""},
		{"local:/tmp/x.sock", "unix", "/tmp/x.sock", ""},
		{"inet:127.0.0.1:8894", "tcp4", "127.0.0.1:8894", ""},
		{"inet:8894@127.0.0.1", "tcp4", "127.0.0.1:8894", ""},
		{"inet:localhost:8894", "tcp4", "127.0.0.1:8894", ""},
		{"inet6:[::1]:8894", "tcp6", "[::1]:8894", ""},
		{"inet:localhost", "", "", "no port"},
		{"inet:127.0.0.1:0", "", "", "bad port"},
		{"inet:mail.example.com:25", "", "", "not an IP address"},
		{"inet6:127.0.0.1:25", "", "", "not an inet6 address"},
		{"unix:relative.sock", "", "", "absolute"},
		{"tcp:1.2.3.4:5", "", "", "unknown socket type"},
		{"/tmp/x.sock", "", "", "want unix:/path"},
	}
	for _, tt := range tests {
		got, err := ParseSpec(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseSpec(%q) error = %v, want one containing %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got.Network != tt.network || got.Address != tt.addr {
			t.Errorf("ParseSpec(%q) = %+v, %v; want %s %s", tt.in, got, err, tt.network, tt.addr)
		}
	}
}

func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{"unix:/a", "inet:1.2.3.4:5", "inet:5@1.2.3.4", "inet6:[::1]:9", "inet:", ":::"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParseSpec(s)
		if err != nil {
			return
		}
		again, err := ParseSpec(spec.String())
		if err != nil || again != spec {
			t.Fatalf("ParseSpec(%q) = %+v, but its String %q parses to %+v, %v", s, spec, spec.String(), again, err)
		}
	})
}

// waitFor polls cond until it holds, failing the test after 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// inMessage reports whether any session is inside a message.
func (s *Server) inMessage() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.sess.inMessage.Load() {
			return true
		}
	}
	return false
}

// TestAliasesAddress: a recipient named in To by one of its aliases is
// addressed (RFC 5230 section 4.5), through the milter's alias lookup.
func TestAliasesAddress(t *testing.T) {
	rec := &recorder{}
	aliases := func(rcpt string) []string {
		if rcpt == "bob@example.com" {
			return []string{"robert@example.com"}
		}
		return nil
	}
	ts := startServer(t, "tcp", policy.DefaultConfig(), Config{Aliases: aliases}, rec)
	s := ts.session(t)
	defer s.Close()
	send(t, s, message{from: "<alice@example.org>", rcpts: []string{"<bob@example.com>", "<carol@example.com>"},
		header: [][2]string{{"To", "Robert <robert@example.com>"}}})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.got) != 1 || len(rec.got[0].Rcpts) != 1 || rec.got[0].Rcpts[0] != "bob@example.com" {
		t.Errorf("offered %+v, want bob only (addressed by his alias)", rec.got)
	}
}

// overloaded is a Responder whose outbox is full.
type overloaded struct{}

func (overloaded) Offer(context.Context, Inbound) error {
	return fmt.Errorf("%w: outbox full", ErrOverload)
}

// TestResponderOverload: a responder that cannot take the message makes
// the milter answer with the fail action: tempfail keeps it at the MTA.
func TestResponderOverload(t *testing.T) {
	for _, tt := range []struct {
		action FailAction
		want   gomilter.ActionCode
	}{{FailAccept, gomilter.ActAccept}, {FailTempfail, gomilter.ActTempFail}} {
		t.Run(string(tt.action), func(t *testing.T) {
			ts := startServer(t, "tcp", policy.DefaultConfig(), Config{FailAction: tt.action}, overloaded{})
			s := ts.session(t)
			defer s.Close()
			_, act := send(t, s, message{from: "<alice@example.org>", rcpts: []string{"<bob@example.com>"}, header: [][2]string{{"To", "bob@example.com"}}})
			if act != tt.want {
				t.Errorf("EOM with the responder overloaded = %c, want %c", act, tt.want)
			}
			// Mail the responder is not offered is accepted as always.
			if _, act := send(t, s, message{from: "<>", rcpts: []string{"<bob@example.com>"}, header: [][2]string{{"To", "bob@example.com"}}}); act != gomilter.ActAccept {
				t.Errorf("bounce with the responder overloaded = %c, want accept", act)
			}
			if n := ts.srv.Metrics().Overloads.Load(); n != 1 {
				t.Errorf("Overloads = %d, want 1", n)
			}
		})
	}
}

// TestListenUnixMode: the socket has its mode from the start, under any
// umask, is reported and dialled at its path, and goes away on Close; a
// live one is not taken over, a stale one is replaced.
func TestListenUnixMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "milter.sock")
	old := syscall.Umask(0)
	ln, err := Listen(Spec{"unix", path}, 0o660)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode() != os.ModeSocket|0o660 {
		t.Errorf("socket %v %v, want mode 0660", fi, err)
	}
	if got := ln.Addr().String(); got != path {
		t.Errorf("Addr() = %s, want %s", got, path)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%d entries beside the socket, want none: %v", len(entries)-1, entries)
	}
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.Close()
	if _, err := Listen(Spec{"unix", path}, 0o660); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("Listen on a live socket = %v, want refused", err)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket still there after Close: %v", err)
	}
	// A stale socket (its process died, nobody listens) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ln2, err := Listen(Spec{"unix", path}, 0o600)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln2.Close()
}
