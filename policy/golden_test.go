package policy

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"reflect"
	"testing"

	"github.com/replygate/replygate/internal/corpus"
)

var update = flag.Bool("update", false, "rewrite testdata/messages/*.golden.json from the classifier")

const corpusDir = "../testdata/messages"

type corpusMessage struct {
	name, golden string
	input        Input
	c            corpus.Case
}

func loadCorpus(t testing.TB) []corpusMessage {
	t.Helper()
	msgs, err := corpus.Load(corpusDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []corpusMessage
	for _, m := range msgs {
		raw, err := os.ReadFile(m.EML)
		if err != nil {
			t.Fatal(err)
		}
		h, err := ReadHeader(bytes.NewReader(raw), Limits{})
		if err != nil {
			t.Fatalf("%s.eml: %v", m.Name, err)
		}
		e := m.Case.Envelope
		env := Envelope{MailFrom: e.MailFrom, Auth: e.Auth, Daemon: e.Daemon, Local: e.Local, Outbound: e.Outbound}
		if e.ClientIP != "" {
			if env.ClientIP, err = netip.ParseAddr(e.ClientIP); err != nil {
				t.Fatalf("%s.case.json: client_ip: %v", m.Name, err)
			}
		}
		for _, r := range e.Rcpt {
			env.Rcpts = append(env.Rcpts, Recipient{Addr: r, Aliases: e.Aliases[r]})
		}
		out = append(out, corpusMessage{m.Name, m.Golden, Input{Envelope: env, Header: h}, m.Case})
	}
	return out
}

// names converts reasons for comparison with the hand-written lists.
func names(rs []Reason) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, string(r))
	}
	return out
}

// TestCorpus checks every message of testdata/messages against the
// hand-written expectation and against the golden file (`check --json`
// output); -update rewrites the golden files, to be reviewed as code.
func TestCorpus(t *testing.T) {
	p := mustPolicy(t, DefaultConfig())
	msgs := loadCorpus(t)
	if len(msgs) < 80 {
		t.Errorf("corpus has %d messages, want at least 80", len(msgs))
	}
	for _, m := range msgs {
		t.Run(m.name, func(t *testing.T) {
			v := p.Classify(m.input)
			w := m.c.Want
			if string(v.AutoReply) != w.AutoReply {
				t.Errorf("Classify(%s).AutoReply = %v, want %v (%s)", m.name, v.AutoReply, w.AutoReply, m.c.Note)
			}
			if got := names(v.Reasons.List()); !reflect.DeepEqual(got, append([]string{}, w.Reasons...)) {
				t.Errorf("Classify(%s).Reasons = %v, want %v", m.name, got, w.Reasons)
			}
			if v.Stamp != w.Stamp {
				t.Errorf("Classify(%s).Stamp = %v, want %v", m.name, v.Stamp, w.Stamp)
			}
			if got := names(v.StampReasons.List()); !reflect.DeepEqual(got, append([]string{}, w.StampReasons...)) {
				t.Errorf("Classify(%s).StampReasons = %v, want %v", m.name, got, w.StampReasons)
			}
			got, err := MarshalVerdict(v)
			if err != nil {
				t.Fatal(err)
			}
			golden := m.golden
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./policy -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Classify(%s) JSON differs from %s:\ngot:\n%s\nwant:\n%s", m.name, golden, got, want)
			}
		})
	}
}

func BenchmarkClassify(b *testing.B) {
	p := mustPolicy(b, DefaultConfig())
	msgs := loadCorpus(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		p.Classify(msgs[i%len(msgs)].input)
	}
}

// BenchmarkClassifyTypical is one personal message with 12 fields, the
// shape of most inbound mail (the Postfix lab's message).
func BenchmarkClassifyTypical(b *testing.B) {
	p := mustPolicy(b, DefaultConfig())
	raw := "Received: from mx.example.org by mx.example.com; Mon, 23 Nov 2026 10:00:00 +0000\n" +
		"Received: from client by mx.example.org; Mon, 23 Nov 2026 09:59:59 +0000\n" +
		"Date: Mon, 23 Nov 2026 09:59:58 +0000\nFrom: Alice <alice@example.org>\n" +
		"To: Bob <bob@example.com>\nSubject: Lunch on Friday?\n" +
		"Message-ID: <20261123095958.1234@example.org>\nMIME-Version: 1.0\n" +
		"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n" +
		"X-Mailer: Thunderbird\nAuthentication-Results: mx.example.com; spf=pass smtp.mailfrom=example.org\n\nhi\n"
	in := Input{Envelope: Envelope{MailFrom: "alice@example.org", Rcpts: rcpts("bob@example.com")}, Header: hdr(b, raw)}
	b.ReportAllocs()
	for b.Loop() {
		p.Classify(in)
	}
}
