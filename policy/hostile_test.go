package policy

import (
	"io"
	"runtime"
	"strings"
	"testing"
)

// TestHostileInput runs header sections that no sane MTA passes on
// through ReadHeader and Classify, the path `check` takes: each gets a
// clear verdict. The milter runs the same cases over a real session
// (milter.TestHostileHeaders).
func TestHostileInput(t *testing.T) {
	var many strings.Builder
	many.WriteString("To: bob@example.com\n")
	for i := range 10000 {
		many.WriteString("X-Filler: ")
		many.WriteString(strings.Repeat("f", i%50))
		many.WriteString("\n")
	}
	tests := []struct {
		name    string
		raw     string
		reasons string // the verdict's reasons; "" is allow
	}{
		{"10,000 fields", many.String() + "\nbody\n", "header-limit"},
		{"1 MiB line", "To: bob@example.com\nSubject: " + strings.Repeat("x", 1<<20) + "\n\n", "header-limit"},
		{"1 MiB folded field", "To: bob@example.com\nSubject: a\n" + strings.Repeat(" "+strings.Repeat("x", 1000)+"\n", 1024) + "\n", "header-limit"},
		{"invalid UTF-8", "To: \xff\xfe <bob@example.com>\nSubject: caf\xe9 \xc3\x28\n\n", ""},
		{"invalid UTF-8 in opt-out", "To: bob@example.com\nX-Allow-Auto-Reply: n\xf6\n\n", ""},
		{"malformed encoded words", "To: =?utf-8?q?=C3=28?= <bob@example.com>\nSubject: =?utf-8?b?!!!?= =?x-nonesuch?q?a?= =?utf-8?q?unterminated\nX-Allow-Auto-Reply: =?utf-8?q?n?o\n\n", ""},
		{"encoded opt-out", "To: bob@example.com\nX-Allow-Auto-Reply: =?us-ascii?q?no?=\n\n", "x-allow-auto-reply"},
		{"encoded precedence", "To: bob@example.com\nPrecedence: =?utf-8?B?YnVsaw==?=\n\n", "precedence"},
		{"encoded-word charset unknown", "To: bob@example.com\nAuto-Submitted: =?x-klingon?q?no?=\n\n", "auto-submitted"},
		{"encoded word with CRLF inside", "To: bob@example.com\nSubject: =?utf-8?q?a=0D=0AList-Id:_x?=\n\n", ""},
		{"NUL in values", "To: bob@example.com\nSubject: \x00\x00a\x00\nPrecedence: bulk\x00\n\n", ""},
		{"NUL in address", "To: bob@example.com\x00carol@example.com\n\n", "not-addressed"},
		// Postfix's cleanup ends the header at a line that is not a field,
		// and so does ReadHeader: what follows is body.
		{"NUL in name ends the header", "To: bob@example.com\nList-\x00Id: <x.example.org>\nList-Id: <x.example.org>\n\n", ""},
		{"only NULs", "\x00\x00\x00\n", "not-addressed"},
		// A bare CR does not end a line for Postfix either: one To field.
		{"CR alone", "To: bob@example.com\rList-Id: <x>\n\n", ""},
	}
	p := mustPolicy(t, DefaultConfig())
	for _, tt := range tests {
		h, err := ReadHeader(strings.NewReader(tt.raw), Limits{})
		if err != nil {
			t.Errorf("ReadHeader(%s): %v", tt.name, err)
			continue
		}
		if len(h.Fields) > DefaultLimits.MaxFields {
			t.Errorf("ReadHeader(%s) kept %d fields, past the limit %d", tt.name, len(h.Fields), DefaultLimits.MaxFields)
		}
		v := p.Classify(Input{Envelope: Envelope{MailFrom: "alice@example.org", Rcpts: rcpts("bob@example.com")}, Header: h})
		if got := strings.Join(v.Reasons.Strings(), ","); got != tt.reasons {
			t.Errorf("Classify(%s).Reasons = %q, want %q", tt.name, got, tt.reasons)
		}
		if (v.AutoReply == Allow) != (tt.reasons == "") {
			t.Errorf("Classify(%s).AutoReply = %v with reasons %q", tt.name, v.AutoReply, tt.reasons)
		}
	}
}

// endless is an io.Reader of one header line that never ends.
type endless struct{ n int64 }

func (e *endless) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), e.n)
	for i := range p[:n] {
		p[i] = 'x'
	}
	e.n -= n
	return int(n), nil
}

// TestReadHeaderMemory: a 256 MiB header line and a million header
// fields cost ReadHeader what its limits keep, not what it reads.
func TestReadHeaderMemory(t *testing.T) {
	tests := []struct {
		name string
		r    func() io.Reader
	}{
		{"256 MiB line", func() io.Reader {
			return io.MultiReader(strings.NewReader("To: bob@example.com\nSubject: "), &endless{256 << 20}, strings.NewReader("\n\n"))
		}},
		{"1,000,000 fields", func() io.Reader {
			return io.MultiReader(strings.NewReader("To: bob@example.com\n"), &repeat{s: "X-A: b\n", n: 1000000}, strings.NewReader("\n"))
		}},
	}
	for _, tt := range tests {
		r := tt.r()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		h, err := ReadHeader(r, Limits{})
		runtime.ReadMemStats(&after)
		if err != nil || !h.Truncated {
			t.Errorf("ReadHeader(%s): truncated %v, error %v; want truncated", tt.name, h.Truncated, err)
		}
		// Lines are read through reused buffers: the total stays far below
		// the input, whatever its size.
		if got := after.TotalAlloc - before.TotalAlloc; got > 4<<20 {
			t.Errorf("ReadHeader(%s) allocated %d MiB", tt.name, got>>20)
		}
		t.Logf("ReadHeader(%s): %d fields kept, %d KiB allocated", tt.name, len(h.Fields), (after.TotalAlloc-before.TotalAlloc)>>10)
	}
}

// repeat is an io.Reader of s, n times.
type repeat struct {
	s   string
	n   int
	off int
}

func (r *repeat) Read(p []byte) (int, error) {
	total := 0
	for len(p) > 0 && r.n > 0 {
		c := copy(p, r.s[r.off:])
		p, total, r.off = p[c:], total+c, r.off+c
		if r.off == len(r.s) {
			r.off, r.n = 0, r.n-1
		}
	}
	if total == 0 {
		return 0, io.EOF
	}
	return total, nil
}
