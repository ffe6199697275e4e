package policy

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// FuzzClassify feeds arbitrary header sections and envelopes through the
// same path as `check`: no panic, reasons only from the known set, and
// allow exactly when there is no reason, for the message and for each
// recipient.
func FuzzClassify(f *testing.F) {
	emls, _ := filepath.Glob(filepath.Join(corpusDir, "*.eml"))
	for _, e := range emls {
		raw, err := os.ReadFile(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw, "alice@example.org", "bob@example.com", false)
	}
	f.Add([]byte("To: =?utf-8?q?=C3=28?= <bob@example.com>\nX-Allow-Auto-Reply: \x00no\n\n"), "", "bob@example.com", true)
	f.Add([]byte("Subject: \xff\xfe\nContent-Type: multipart/report\n"), "SRS1=a==b=c=d=e@f", "x", false)
	p := mustPolicy(f, DefaultConfig())
	// The names DESIGN.md fixes, and the ones this project added; written
	// out here so that a new reason must be added on purpose.
	names := map[Reason]bool{
		"x-allow-auto-reply": true, "auto-submitted": true, "list-header": true, "precedence": true,
		"x-auto-response-suppress": true, "null-sender": true, "system-sender": true, "report": true,
		"not-addressed": true, "spam": true, "bulk-heuristic": true,
		"product-header": true, "header-limit": true, "opt-in": true,
		"machine-sender": true, "machine-login": true, "machine-client": true,
	}
	checkNames := func(t *testing.T, s ReasonSet) {
		t.Helper()
		for _, r := range s.List() {
			if !names[r] {
				t.Fatalf("unknown reason %q", r)
			}
		}
		if s.Len() != len(s.List()) {
			t.Fatalf("reason set %b has bits without a name", s)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte, mailFrom, rcpt string, outbound bool) {
		h, err := ReadHeader(bytes.NewReader(raw), Limits{MaxFields: 200, MaxBytes: 16 << 10})
		if err != nil && err != ErrNoHeader {
			t.Fatalf("ReadHeader: %v", err)
		}
		in := Input{Envelope: Envelope{MailFrom: mailFrom, Outbound: outbound}, Header: h}
		if rcpt != "" {
			in.Envelope.Rcpts = []Recipient{{Addr: rcpt}, {Addr: "other@example.com"}}
		}
		v := p.Classify(in)
		checkNames(t, v.Reasons)
		checkNames(t, v.StampReasons)
		if (v.AutoReply == Allow) != (v.Reasons == 0) {
			t.Fatalf("AutoReply = %v with reasons %v", v.AutoReply, v.Reasons.List())
		}
		for _, r := range v.Recipients {
			checkNames(t, r.Reasons)
			if (r.AutoReply == Allow) != (r.Reasons == 0) {
				t.Fatalf("recipient %q: AutoReply = %v with reasons %v", r.Rcpt, r.AutoReply, r.Reasons.List())
			}
		}
		if v.Stamp != (v.StampReasons != 0) || v.Stamp && !v.Outbound {
			t.Fatalf("Stamp = %v, Outbound = %v with stamp reasons %v", v.Stamp, v.Outbound, v.StampReasons.List())
		}
		b, err := MarshalVerdict(v)
		if err != nil || !json.Valid(b) {
			t.Fatalf("MarshalVerdict: %v %q", err, b)
		}
	})
}
