package milter

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/replygate/replygate/policy"
)

type hostileHeader struct {
	name   string
	header [][2]string
	want   string // X-Replygate-Verdict
}

// hostileHeaders are header sections no MTA should pass on but a hostile
// or broken one might: each must get a verdict and an accept, and leave
// the session able to judge the next message. (A function, not a
// variable: TestLoad measures the heap.)
func hostileHeaders() []hostileHeader {
	return []hostileHeader{
		{"10,000 fields", manyFields(10000),
			"suppress; reasons=header-limit; direction=inbound; stamp=false"},
		{"1 MiB field", [][2]string{{"To", "bob@example.com"}, {"Subject", strings.Repeat("x", 1<<20)}},
			"suppress; reasons=header-limit; direction=inbound; stamp=false"},
		{"16 MiB field", [][2]string{{"To", "bob@example.com"}, {"X-Big", strings.Repeat("y", 16<<20)}},
			"suppress; reasons=header-limit; direction=inbound; stamp=false"},
		{"invalid UTF-8", [][2]string{{"To", "\xff\xfe <bob@example.com>"}, {"Subject", "caf\xe9 \xc3\x28"}},
			"allow; direction=inbound; stamp=false"},
		{"malformed encoded words", [][2]string{{"To", "=?utf-8?q?=C3=28?= <bob@example.com>"}, {"Subject", "=?utf-8?b?!!!?= =?x-nonesuch?q?a?= =?utf-8?q?unterminated"},
			{"X-Allow-Auto-Reply", "=?utf-8?q?n?o"}},
			"allow; direction=inbound; stamp=false"},
		{"encoded opt-out", [][2]string{{"To", "bob@example.com"}, {"X-Allow-Auto-Reply", "=?us-ascii?q?no?="}},
			"suppress; reasons=x-allow-auto-reply; direction=inbound; stamp=false"},
		{"NUL in values", [][2]string{{"To", "bob@example.com"}, {"Subject", "\x00\x00a\x00"}, {"Precedence", "bulk\x00"}},
			"allow; direction=inbound; stamp=false"},
		{"NUL in address", [][2]string{{"To", "bob@example.com\x00carol@example.com"}},
			"suppress; reasons=not-addressed; direction=inbound; stamp=false"},
		{"NUL in name", [][2]string{{"To", "bob@example.com"}, {"List-\x00Id", "<x.example.org>"}},
			"suppress; reasons=list-header; direction=inbound; stamp=false"},
		{"empty name", [][2]string{{"To", "bob@example.com"}, {"", "value"}},
			"allow; direction=inbound; stamp=false"},
	}
}

func manyFields(n int) [][2]string {
	h := [][2]string{{"To", "bob@example.com"}}
	for i := range n {
		h = append(h, [2]string{"X-Filler", strings.Repeat("f", i%50)})
	}
	return h
}

// TestHostileHeaders sends each hostile header section through a real
// session, then a plain message on the same session: both are accepted
// with the right verdict, so nothing desynchronised the stream (a stray
// reply would be read as the end-of-message answer).
func TestHostileHeaders(t *testing.T) {
	ts := startServer(t, "tcp", policy.DefaultConfig(), Config{TraceHeader: true}, nil)
	for _, tt := range hostileHeaders() {
		t.Run(tt.name, func(t *testing.T) {
			s := ts.session(t)
			defer s.Close()
			added, act := send(t, s, message{from: "<alice@example.org>", rcpts: []string{"<bob@example.com>"}, header: tt.header})
			if act != gomilter.ActAccept || added[TraceHeader] != tt.want {
				t.Errorf("%s: action %c, %s %q; want accept, %q", tt.name, act, TraceHeader, added[TraceHeader], tt.want)
			}
			added, act = send(t, s, message{from: "<alice@example.org>", rcpts: []string{"<bob@example.com>"}, header: [][2]string{{"To", "bob@example.com"}}})
			if want := "allow; direction=inbound; stamp=false"; act != gomilter.ActAccept || added[TraceHeader] != want {
				t.Errorf("message after %s: action %c, %s %q; want accept, %q", tt.name, act, TraceHeader, added[TraceHeader], want)
			}
		})
	}
}

// TestHostileHeadersAgreeWithCheck: the milter and `check` (ReadHeader)
// judge the same hostile fields alike, except where a field cannot be
// written as a header line at all (NUL or nothing in its name).
func TestHostileHeadersAgreeWithCheck(t *testing.T) {
	p, err := policy.New(policy.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range hostileHeaders() {
		if tt.name == "NUL in name" || tt.name == "empty name" {
			continue
		}
		var raw bytes.Buffer
		for _, f := range tt.header {
			raw.WriteString(f[0] + ": " + f[1] + "\n")
		}
		raw.WriteString("\nbody\n")
		h, err := policy.ReadHeader(&raw, policy.Limits{})
		if err != nil {
			t.Fatalf("ReadHeader(%s): %v", tt.name, err)
		}
		v := p.Classify(policy.Input{Envelope: policy.Envelope{MailFrom: "alice@example.org", Rcpts: []policy.Recipient{{Addr: "bob@example.com"}}}, Header: h})
		if got := traceValue(v); got != tt.want {
			t.Errorf("check path on %s: %q, milter path wants %q", tt.name, got, tt.want)
		}
	}
}

// TestHugeHeaderMemory streams a 64 MiB header field and 100,000 small
// ones through a raw session: the server allocates what its limits keep,
// not what it was sent, and still answers with the verdict.
func TestHugeHeaderMemory(t *testing.T) {
	ts := startServer(t, "unix", policy.DefaultConfig(), Config{TraceHeader: true}, nil)
	c := ts.rawConn(t)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	w := bufio.NewWriter(c)
	w.Write(frame('O', "\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff"))
	w.Flush()
	if code, _ := readFrame(t, c); code != 'O' {
		t.Fatalf("OPTNEG answered %q", code)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	w.Write(frame('M', "<alice@example.org>\x00"))
	w.Write(frame('R', "<bob@example.com>\x00"))
	w.Write(frame('L', "To\x00bob@example.com\x00"))
	var fr []byte // built in place: TotalAlloc is then the server's
	for i := range 100000 {
		fr = append(fr[:0], 0, 0, 0, 0, 'L')
		fr = append(fr, "X-Filler\x00"...)
		fr = append(strconv.AppendInt(fr, int64(i), 10), 0)
		binary.BigEndian.PutUint32(fr, uint32(len(fr)-4))
		w.Write(fr)
	}
	const huge = 64 << 20
	name := "X-Huge\x00"
	w.Write(binary.BigEndian.AppendUint32(nil, uint32(1+len(name)+huge+1)))
	w.WriteString("L" + name)
	chunk := bytes.Repeat([]byte("z"), 64<<10)
	for range huge / len(chunk) {
		w.Write(chunk)
	}
	w.WriteByte(0)
	w.Write(frame('E', ""))
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	var trace string
	for {
		code, data := readFrame(t, c)
		if code == 'h' {
			if name, value, _ := strings.Cut(strings.TrimSuffix(string(data), "\x00"), "\x00"); name == TraceHeader {
				trace = value
			}
			continue
		}
		if code != 'a' {
			t.Fatalf("end of message answered %q, want accept", code)
		}
		break
	}
	runtime.ReadMemStats(&after)
	if !strings.Contains(trace, "header-limit") {
		t.Errorf("%s = %q, want header-limit", TraceHeader, trace)
	}
	// 70 MiB went in; the server keeps at most 256 KiB of header and reads
	// through small buffers. Allocation per frame is churn, not retention,
	// so bound the total: a copy of the big field would pass it alone.
	t.Logf("100,000 fields and a 64 MiB one: %d KiB allocated", (after.TotalAlloc-before.TotalAlloc)>>10)
	if got := after.TotalAlloc - before.TotalAlloc; got > 4<<20 {
		t.Errorf("server allocated %d MiB for a 70 MiB header, want it bounded (< 4 MiB)", got>>20)
	}
}

// readFrame reads one milter frame.
func readFrame(t *testing.T, c net.Conn) (byte, []byte) {
	t.Helper()
	var n [4]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	b := make([]byte, binary.BigEndian.Uint32(n[:]))
	if _, err := io.ReadFull(c, b); err != nil || len(b) == 0 {
		t.Fatalf("read frame: %v", err)
	}
	return b[0], b[1:]
}
