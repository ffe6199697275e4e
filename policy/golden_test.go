package policy

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/messages/*.golden.json from the classifier")

const corpusDir = "../testdata/messages"

// corpusCase is NAME.case.json: the envelope a message arrived with and
// the verdict a person expects, written by hand. The golden file is what
// the classifier says; the expectation keeps the golden file honest.
type corpusCase struct {
	Envelope struct {
		MailFrom string              `json:"mail_from"`
		Rcpt     []string            `json:"rcpt"`
		Aliases  map[string][]string `json:"aliases"`
		Auth     string              `json:"auth"`
		ClientIP string              `json:"client_ip"`
		Daemon   string              `json:"daemon"`
		Local    bool                `json:"local"`
		Outbound bool                `json:"outbound"`
	} `json:"envelope"`
	Want struct {
		AutoReply    Decision `json:"auto_reply"`
		Reasons      []Reason `json:"reasons"`
		Stamp        bool     `json:"stamp"`
		StampReasons []Reason `json:"stamp_reasons"`
	} `json:"want"`
	Note string `json:"note"`
}

type corpusMessage struct {
	name  string
	input Input
	c     corpusCase
}

func loadCorpus(t testing.TB) []corpusMessage {
	t.Helper()
	emls, err := filepath.Glob(filepath.Join(corpusDir, "*.eml"))
	if err != nil || len(emls) == 0 {
		t.Fatalf("no messages in %s: %v", corpusDir, err)
	}
	var out []corpusMessage
	for _, eml := range emls {
		name := strings.TrimSuffix(filepath.Base(eml), ".eml")
		raw, err := os.ReadFile(eml)
		if err != nil {
			t.Fatal(err)
		}
		var c corpusCase
		cj, err := os.ReadFile(filepath.Join(corpusDir, name+".case.json"))
		if err != nil {
			t.Fatalf("%s: every message needs a case file: %v", name, err)
		}
		dec := json.NewDecoder(bytes.NewReader(cj))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			t.Fatalf("%s.case.json: %v", name, err)
		}
		h, err := ReadHeader(bytes.NewReader(raw), Limits{})
		if err != nil {
			t.Fatalf("%s.eml: %v", name, err)
		}
		e := c.Envelope
		env := Envelope{MailFrom: e.MailFrom, Auth: e.Auth, Daemon: e.Daemon, Local: e.Local, Outbound: e.Outbound}
		if e.ClientIP != "" {
			if env.ClientIP, err = netip.ParseAddr(e.ClientIP); err != nil {
				t.Fatalf("%s.case.json: client_ip: %v", name, err)
			}
		}
		for _, r := range e.Rcpt {
			env.Rcpts = append(env.Rcpts, Recipient{Addr: r, Aliases: e.Aliases[r]})
		}
		out = append(out, corpusMessage{name, Input{Envelope: env, Header: h}, c})
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
			if v.AutoReply != w.AutoReply {
				t.Errorf("Classify(%s).AutoReply = %v, want %v (%s)", m.name, v.AutoReply, w.AutoReply, m.c.Note)
			}
			if got := v.Reasons.List(); !reflect.DeepEqual(got, append([]Reason{}, w.Reasons...)) {
				t.Errorf("Classify(%s).Reasons = %v, want %v", m.name, got, w.Reasons)
			}
			if v.Stamp != w.Stamp {
				t.Errorf("Classify(%s).Stamp = %v, want %v", m.name, v.Stamp, w.Stamp)
			}
			if got := v.StampReasons.List(); !reflect.DeepEqual(got, append([]Reason{}, w.StampReasons...)) {
				t.Errorf("Classify(%s).StampReasons = %v, want %v", m.name, got, w.StampReasons)
			}
			got, err := MarshalVerdict(v)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join(corpusDir, m.name+".golden.json")
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
