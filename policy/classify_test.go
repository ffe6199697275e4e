package policy

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func mustPolicy(t testing.TB, c Config) *Policy {
	t.Helper()
	p, err := New(c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func hdr(t testing.TB, raw string) Header {
	t.Helper()
	h, err := ReadHeader(strings.NewReader(raw), Limits{})
	if err != nil {
		t.Fatalf("ReadHeader(%q): %v", raw, err)
	}
	return h
}

func rcpts(addrs ...string) []Recipient {
	out := make([]Recipient, len(addrs))
	for i, a := range addrs {
		out[i] = Recipient{Addr: a}
	}
	return out
}

const personal = "From: Alice <alice@example.org>\nTo: Bob <bob@example.com>\nSubject: lunch\n\nhi\n"

func TestClassifyInbound(t *testing.T) {
	p := mustPolicy(t, DefaultConfig())
	tests := []struct {
		name     string
		from     string
		rcpt     []Recipient
		header   string
		want     []Reason
		wantRcpt []Decision
	}{
		{"personal", "alice@example.org", rcpts("bob@example.com"), personal, nil, []Decision{Allow}},
		{"x-allow-auto-reply no", "alice@example.org", rcpts("bob@example.com"), "X-Allow-Auto-Reply: no\nTo: bob@example.com\n\n", []Reason{ReasonXAllowAutoReply}, nil},
		{"x-allow-auto-reply NO comment", "alice@example.org", rcpts("bob@example.com"), "x-allow-auto-reply:   NO (robot)  \nTo: bob@example.com\n\n", []Reason{ReasonXAllowAutoReply}, nil},
		{"x-allow-auto-reply folded", "alice@example.org", rcpts("bob@example.com"), "X-Allow-Auto-Reply:\n  no\nTo: bob@example.com\n\n", []Reason{ReasonXAllowAutoReply}, nil},
		{"x-allow-auto-reply encoded", "alice@example.org", rcpts("bob@example.com"), "X-Allow-Auto-Reply: =?utf-8?q?no?=\nTo: bob@example.com\n\n", []Reason{ReasonXAllowAutoReply}, nil},
		{"x-allow-auto-reply yes", "alice@example.org", rcpts("bob@example.com"), "X-Allow-Auto-Reply: yes\nTo: bob@example.com\n\n", nil, nil},
		{"x-allow-auto-reply nope", "alice@example.org", rcpts("bob@example.com"), "X-Allow-Auto-Reply: nope\nTo: bob@example.com\n\n", nil, nil},
		{"x-allow-auto-reply second occurrence", "alice@example.org", rcpts("bob@example.com"), "X-Allow-Auto-Reply: yes\nX-Allow-Auto-Reply: no\nTo: bob@example.com\n\n", []Reason{ReasonXAllowAutoReply}, nil},
		{"auto-submitted auto-replied", "alice@example.org", rcpts("bob@example.com"), "Auto-Submitted: auto-replied\nTo: bob@example.com\n\n", []Reason{ReasonAutoSubmitted}, nil},
		{"auto-submitted params", "alice@example.org", rcpts("bob@example.com"), "Auto-Submitted: auto-generated; owner-email=\"x@example.org\"\nTo: bob@example.com\n\n", []Reason{ReasonAutoSubmitted}, nil},
		{"auto-submitted no comment", "alice@example.org", rcpts("bob@example.com"), "Auto-Submitted: No (a person)\nTo: bob@example.com\n\n", nil, nil},
		{"auto-submitted empty", "alice@example.org", rcpts("bob@example.com"), "Auto-Submitted:\nTo: bob@example.com\n\n", []Reason{ReasonAutoSubmitted}, nil},
		{"list-id", "alice@example.org", rcpts("bob@example.com"), "List-Id: <dev.lists.example.org>\nTo: bob@example.com\n\n", []Reason{ReasonListHeader}, nil},
		{"list-unsubscribe-post lower", "alice@example.org", rcpts("bob@example.com"), "list-unsubscribe-post: List-Unsubscribe=One-Click\nTo: bob@example.com\n\n", []Reason{ReasonListHeader}, nil},
		{"precedence BULK", "alice@example.org", rcpts("bob@example.com"), "Precedence: BULK\nTo: bob@example.com\n\n", []Reason{ReasonPrecedence}, nil},
		{"precedence junk", "alice@example.org", rcpts("bob@example.com"), "Precedence: junk\nTo: bob@example.com\n\n", []Reason{ReasonPrecedence}, nil},
		{"precedence first-class", "alice@example.org", rcpts("bob@example.com"), "Precedence: first-class\nTo: bob@example.com\n\n", nil, nil},
		{"xars OOF in list", "alice@example.org", rcpts("bob@example.com"), "X-Auto-Response-Suppress: DR, OOF\nTo: bob@example.com\n\n", []Reason{ReasonXAutoResponseSuppress}, nil},
		{"xars all lower", "alice@example.org", rcpts("bob@example.com"), "X-Auto-Response-Suppress: all\nTo: bob@example.com\n\n", []Reason{ReasonXAutoResponseSuppress}, nil},
		{"xars autoreply", "alice@example.org", rcpts("bob@example.com"), "X-Auto-Response-Suppress: RN,AutoReply\nTo: bob@example.com\n\n", []Reason{ReasonXAutoResponseSuppress}, nil},
		{"xars NDR only", "alice@example.org", rcpts("bob@example.com"), "X-Auto-Response-Suppress: NDR\nTo: bob@example.com\n\n", nil, nil},
		{"null sender", "", rcpts("bob@example.com"), personal, []Reason{ReasonNullSender}, nil},
		{"mailer-daemon", "MAILER-DAEMON@mx.example.org", rcpts("bob@example.com"), personal, []Reason{ReasonSystemSender}, nil},
		{"bare mailer-daemon", "MAILER-DAEMON", rcpts("bob@example.com"), personal, []Reason{ReasonSystemSender}, nil},
		{"owner-", "owner-dev@lists.example.org", rcpts("bob@example.com"), personal, []Reason{ReasonSystemSender}, nil},
		{"-request", "dev-request@lists.example.org", rcpts("bob@example.com"), personal, []Reason{ReasonSystemSender}, nil},
		{"listserv", "LISTSERV@lists.example.org", rcpts("bob@example.com"), personal, []Reason{ReasonSystemSender}, nil},
		{"majordomo", "Majordomo@lists.example.org", rcpts("bob@example.com"), personal, []Reason{ReasonSystemSender}, nil},
		{"noreply", "noreply@shop.example.net", rcpts("bob@example.com"), personal, []Reason{ReasonSystemSender}, nil},
		{"no-reply", "No-Reply@shop.example.net", rcpts("bob@example.com"), personal, []Reason{ReasonSystemSender}, nil},
		{"bounces+detail", "bounces+12345-abcd@mail.example.net", rcpts("bob@example.com"), personal, []Reason{ReasonSystemSender}, nil},
		{"list-bounces", "dev-bounces@lists.example.org", rcpts("bob@example.com"), personal, []Reason{ReasonSystemSender}, nil},
		{"mlmmj verp", "dev+bounces-12-bob=example.com@lists.example.org", rcpts("bob@example.com"), personal, []Reason{ReasonSystemSender}, nil},
		{"ezmlm verp", "dev-return-12-bob=example.com@lists.example.org", rcpts("bob@example.com"), personal, []Reason{ReasonSystemSender}, nil},
		{"sympa list-owner", "dev-owner@lists.example.org", rcpts("bob@example.com"), personal, []Reason{ReasonSystemSender}, nil},
		{"person with detail", "alice+lists@example.org", rcpts("bob@example.com"), personal, nil, nil},
		{"postmaster is a person", "postmaster@example.org", rcpts("bob@example.com"), personal, nil, nil},
		{"owner alone is a person", "owner@example.org", rcpts("bob@example.com"), personal, nil, nil},
		{"srs0 mailer-daemon", "SRS0=HHH=TT=example.org=MAILER-DAEMON@forwarder.example", rcpts("bob@example.com"), personal, []Reason{ReasonSystemSender}, nil},
		{"srs1 owner", "SRS1=HHH=fwd.example==HHH=TT=lists.example.org=owner-dev@fwd2.example", rcpts("bob@example.com"), personal, []Reason{ReasonSystemSender}, nil},
		{"srs0 person", "SRS0=HHH=TT=example.org=alice@forwarder.example", rcpts("bob@example.com"), personal, nil, nil},
		{"batv prvs", "prvs=1234abcdef=owner-list@example.org", rcpts("bob@example.com"), personal, []Reason{ReasonSystemSender}, nil},
		{"batv person", "prvs=1234abcdef=alice@example.org", rcpts("bob@example.com"), personal, nil, nil},
		{"dsn", "", rcpts("bob@example.com"), "To: bob@example.com\nContent-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"x\"\n\n", []Reason{ReasonNullSender, ReasonReport}, nil},
		{"report upper", "alice@example.org", rcpts("bob@example.com"), "To: bob@example.com\nContent-Type: MULTIPART/REPORT;report-type=disposition-notification\n\n", []Reason{ReasonReport}, nil},
		{"reporter is not report", "alice@example.org", rcpts("bob@example.com"), "To: bob@example.com\nContent-Type: multipart/reporter\n\n", nil, nil},
		{"spam flag", "alice@example.org", rcpts("bob@example.com"), "X-Spam-Flag: YES\nTo: bob@example.com\n\n", []Reason{ReasonSpam}, nil},
		{"spam status yes", "alice@example.org", rcpts("bob@example.com"), "X-Spam-Status: Yes, score=12.3 required=5.0\nTo: bob@example.com\n\n", []Reason{ReasonSpam}, nil},
		{"spam status no", "alice@example.org", rcpts("bob@example.com"), "X-Spam-Status: No, score=-0.1\nTo: bob@example.com\n\n", nil, nil},
		{"not addressed", "alice@example.org", rcpts("bob@example.com"), "To: carol@example.com\n\n", []Reason{ReasonNotAddressed}, []Decision{Suppress}},
		{"addressed in bcc", "alice@example.org", rcpts("bob@example.com"), "To: carol@example.com\nBcc: bob@example.com\n\n", nil, nil},
		{"addressed in resent-cc", "alice@example.org", rcpts("bob@example.com"), "To: carol@example.com\nResent-Cc: <BOB@Example.COM>\n\n", nil, nil},
		{"addressed with detail", "alice@example.org", rcpts("bob+work@example.com"), "To: Bob <bob@example.com>\n\n", nil, nil},
		{"addressed detail in header", "alice@example.org", rcpts("bob@example.com"), "To: bob+news@example.com\n\n", nil, nil},
		{"lookalike not addressed", "alice@example.org", rcpts("bob@example.com"), "To: jimbob@example.com, bob@example.community\n\n", []Reason{ReasonNotAddressed}, nil},
		{"display name is not the address", "alice@example.org", rcpts("bob@example.com"), "To: \"bob@example.com\" <mallory@example.net>\n\n", []Reason{ReasonNotAddressed}, nil},
		{"alias addressed", "alice@example.org", []Recipient{{Addr: "bob@example.com", Aliases: []string{"robert@example.com"}}}, "To: robert@example.com\n\n", nil, nil},
		{"one of two addressed", "alice@example.org", rcpts("bob@example.com", "carol@example.com"), "To: carol@example.com\n\n", nil, []Decision{Suppress, Allow}},
		{"no rcpt: addressing not judged", "alice@example.org", nil, "To: carol@example.com\n\n", nil, nil},
		{"github", "notifications@github.com", rcpts("bob@example.com"), "X-GitHub-Reason: mention\nTo: bob@example.com\n\n", []Reason{ReasonProductHeader}, nil},
		{"newsletter", "news@shop.example.net", rcpts("bob@example.com"), "Feedback-ID: 1:2:3:mailer\nTo: bob@example.com\n\n", []Reason{ReasonBulkHeuristic}, nil},
		{"everything", "", rcpts("bob@example.com"), "X-Allow-Auto-Reply: no\nAuto-Submitted: auto-generated\nList-Id: x\nPrecedence: list\nX-Auto-Response-Suppress: All\nContent-Type: multipart/report\nX-Spam-Flag: yes\nX-Campaign-Id: 7\nX-Jenkins-Job: x\n\n",
			[]Reason{ReasonXAllowAutoReply, ReasonAutoSubmitted, ReasonListHeader, ReasonPrecedence, ReasonXAutoResponseSuppress, ReasonNullSender, ReasonReport, ReasonNotAddressed, ReasonSpam, ReasonBulkHeuristic, ReasonProductHeader}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := p.Classify(Input{Envelope: Envelope{MailFrom: tt.from, Rcpts: tt.rcpt}, Header: hdr(t, tt.header)})
			if got := v.Reasons.List(); !reflect.DeepEqual(got, append([]Reason{}, tt.want...)) {
				t.Errorf("Classify(%s).Reasons = %v, want %v", tt.name, got, tt.want)
			}
			if (v.AutoReply == Allow) != (len(tt.want) == 0) {
				t.Errorf("Classify(%s).AutoReply = %v with reasons %v", tt.name, v.AutoReply, tt.want)
			}
			if v.Outbound || v.Stamp {
				t.Errorf("Classify(%s): inbound mail judged outbound=%v stamp=%v", tt.name, v.Outbound, v.Stamp)
			}
			for i, want := range tt.wantRcpt {
				if got := v.Recipients[i].AutoReply; got != want {
					t.Errorf("Classify(%s).Recipients[%d].AutoReply = %v, want %v", tt.name, i, got, want)
				}
			}
		})
	}
}

func TestClassifyOutbound(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MachineSenders = []string{"jenkins@ci.example.com", "*@tracker.example.com"}
	cfg.MachineLogins = []string{"robot-*"}
	cfg.MachineNetworks = []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}
	cfg.InternalNetworks = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	cfg.OptInSenders = []string{"ops@example.com"}
	p := mustPolicy(t, cfg)
	plain := "From: x\nTo: someone@example.net\nSubject: s\n\n"
	tests := []struct {
		name      string
		env       Envelope
		header    string
		outbound  bool
		want      []Reason
		wantAdded []string
	}{
		{"person via submission", Envelope{MailFrom: "alice@example.com", Daemon: "ORIGINATING"}, plain, true, nil, nil},
		{"inbound robot is not stamped", Envelope{MailFrom: "jenkins@ci.example.com", Daemon: "mx.example.com"}, plain, false, nil, nil},
		{"machine sender via sasl", Envelope{MailFrom: "jenkins@ci.example.com", Auth: "jenkins"}, plain, true, []Reason{ReasonMachineSender}, []string{"X-Allow-Auto-Reply", "Auto-Submitted"}},
		{"machine sender domain glob", Envelope{MailFrom: "Issues@Tracker.Example.com", Daemon: "originating"}, plain, true, []Reason{ReasonMachineSender}, []string{"X-Allow-Auto-Reply", "Auto-Submitted"}},
		{"machine login", Envelope{MailFrom: "alerts@example.com", Auth: "robot-grafana"}, plain, true, []Reason{ReasonMachineLogin}, []string{"X-Allow-Auto-Reply", "Auto-Submitted"}},
		{"machine client", Envelope{MailFrom: "a@example.com", ClientIP: netip.MustParseAddr("10.9.1.2")}, plain, true, []Reason{ReasonMachineClient}, []string{"X-Allow-Auto-Reply", "Auto-Submitted"}},
		{"internal network person", Envelope{MailFrom: "a@example.com", ClientIP: netip.MustParseAddr("10.1.1.2")}, plain, true, nil, nil},
		{"opt-in by config", Envelope{MailFrom: "ops@example.com", Local: true}, plain, true, []Reason{ReasonOptIn}, []string{"X-Allow-Auto-Reply", "Auto-Submitted"}},
		{"opt-in by store", Envelope{MailFrom: "carol@example.com", Local: true, OptIn: true}, plain, true, []Reason{ReasonOptIn}, []string{"X-Allow-Auto-Reply", "Auto-Submitted"}},
		{"cron keeps its auto-submitted", Envelope{MailFrom: "root@host.example.com", Local: true}, "From: root\nX-Cron-Env: <SHELL=/bin/sh>\nAuto-Submitted: auto-generated\n\n", true, []Reason{ReasonAutoSubmitted, ReasonProductHeader}, []string{"X-Allow-Auto-Reply"}},
		{"already stamped", Envelope{MailFrom: "a@example.com", Outbound: true}, "X-Allow-Auto-Reply: no\nAuto-Submitted: auto-generated\n\n", true, []Reason{ReasonAutoSubmitted}, nil},
		{"x-allow-auto-reply alone is no robot", Envelope{MailFrom: "a@example.com", Outbound: true}, "X-Allow-Auto-Reply: no\n\n", true, nil, nil},
		{"null sender outbound", Envelope{MailFrom: "", Local: true}, plain, true, []Reason{ReasonNullSender}, []string{"X-Allow-Auto-Reply", "Auto-Submitted"}},
		{"noreply outbound", Envelope{MailFrom: "no-reply@example.com", Auth: "shop"}, plain, true, []Reason{ReasonSystemSender}, []string{"X-Allow-Auto-Reply", "Auto-Submitted"}},
		{"github style", Envelope{MailFrom: "notifications@example.com", Outbound: true}, "X-GitHub-Reason: mention\nList-ID: x\nX-Auto-Response-Suppress: All\n\n", true, []Reason{ReasonListHeader, ReasonXAutoResponseSuppress, ReasonProductHeader}, []string{"X-Allow-Auto-Reply", "Auto-Submitted"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := p.Classify(Input{Envelope: tt.env, Header: hdr(t, tt.header)})
			if v.Outbound != tt.outbound {
				t.Errorf("Classify(%s).Outbound = %v, want %v", tt.name, v.Outbound, tt.outbound)
			}
			if got := v.StampReasons.List(); !reflect.DeepEqual(got, append([]Reason{}, tt.want...)) {
				t.Errorf("Classify(%s).StampReasons = %v, want %v", tt.name, got, tt.want)
			}
			if v.Stamp != (len(tt.want) > 0) {
				t.Errorf("Classify(%s).Stamp = %v with reasons %v", tt.name, v.Stamp, tt.want)
			}
			var names []string
			for _, f := range v.AddHeaders() {
				names = append(names, f.Name)
			}
			if !reflect.DeepEqual(names, tt.wantAdded) {
				t.Errorf("Classify(%s).AddHeaders() = %v, want %v", tt.name, names, tt.wantAdded)
			}
		})
	}
}

// TestLoopbackIsInbound: with no config, only the daemon name, a login or
// local submission make mail outbound (DESIGN.md); a loopback client is
// outbound only when the admin lists loopback in internal_networks.
func TestLoopbackIsInbound(t *testing.T) {
	in := Input{Envelope: Envelope{MailFrom: "jira@example.com", ClientIP: netip.MustParseAddr("::ffff:127.0.0.1")}, Header: hdr(t, "X-JIRA-FingerPrint: x\n\n")}
	if v := mustPolicy(t, DefaultConfig()).Classify(in); v.Outbound {
		t.Errorf("Classify(loopback client, default config) judged outbound")
	}
	cfg := DefaultConfig()
	cfg.InternalNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}
	if v := mustPolicy(t, cfg).Classify(in); !v.Outbound || !v.Stamp {
		t.Errorf("Classify(loopback client, loopback internal) outbound=%v stamp=%v, want both", v.Outbound, v.Stamp)
	}
}

func TestAddSuppressHeader(t *testing.T) {
	cfg := DefaultConfig()
	cfg.AddSuppressHeader = true
	p := mustPolicy(t, cfg)
	v := p.Classify(Input{Envelope: Envelope{MailFrom: "", Local: true}, Header: hdr(t, "Subject: x\n\n")})
	got := v.AddHeaders()
	want := []Field{{"X-Allow-Auto-Reply", "no"}, {"Auto-Submitted", "auto-generated"}, {"X-Auto-Response-Suppress", "All"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("AddHeaders() = %v, want %v", got, want)
	}
	v = p.Classify(Input{Envelope: Envelope{MailFrom: "", Local: true}, Header: hdr(t, "X-Auto-Response-Suppress: NDR\n\n")})
	if got := v.AddHeaders(); len(got) != 2 {
		t.Errorf("AddHeaders() with X-Auto-Response-Suppress present = %v, want 2 fields", got)
	}
}

func TestHeaderLimit(t *testing.T) {
	p := mustPolicy(t, DefaultConfig())
	h := NewHeader(Limits{MaxFields: 10, MaxBytes: 1000})
	for i := 0; i < 20; i++ {
		h.Add("Received", "from x")
	}
	if len(h.Fields) != 10 || !h.Truncated {
		t.Fatalf("Add past MaxFields: %d fields, truncated=%v; want 10, true", len(h.Fields), h.Truncated)
	}
	v := p.Classify(Input{Envelope: Envelope{MailFrom: "a@example.org"}, Header: h})
	if !v.Reasons.Has(ReasonHeaderLimit) || v.AutoReply != Suppress {
		t.Errorf("Classify(truncated header) = %v %v, want suppress with header-limit", v.AutoReply, v.Reasons.List())
	}
	h = NewHeader(Limits{MaxFields: 10, MaxBytes: 100})
	h.Add("Subject", strings.Repeat("x", 200))
	if len(h.Fields) != 0 || !h.Truncated {
		t.Errorf("Add past MaxBytes kept %d fields, truncated=%v", len(h.Fields), h.Truncated)
	}
	// One field is bounded alike whether it came from the milter (Add)
	// or from a file (ReadHeader).
	h = NewHeader(Limits{MaxBytes: 1 << 20})
	h.Add("Subject", strings.Repeat("x", MaxFieldBytes+1))
	if len(h.Fields) != 0 || !h.Truncated {
		t.Errorf("Add of a field past MaxFieldBytes kept %d fields, truncated=%v", len(h.Fields), h.Truncated)
	}
}

func TestConfigErrors(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SpamFlags = []string{"X-Spam-Flag"}
	cfg.MachineSenders = []string{"a b@example.com"}
	cfg.ProductHeaders = []string{"X Bad"}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate() = nil, want errors")
	}
	for _, want := range []string{"policy.spam_flags", "policy.machine_senders", "policy.product_headers"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %q, want it to name %s", err, want)
		}
	}
}

func TestGlobFold(t *testing.T) {
	tests := []struct {
		pat, s string
		want   bool
	}{
		{"noreply", "NoReply", true},
		{"owner-*", "owner-list", true},
		{"*-bounces", "dev-bounces", true},
		{"*-bounces", "bounces", false},
		{"*@ci.example.com", "jenkins@CI.example.com", true},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"*", "", true},
		{"", "x", false},
	}
	for _, tt := range tests {
		if got := globFold(tt.pat, tt.s); got != tt.want {
			t.Errorf("globFold(%q, %q) = %v, want %v", tt.pat, tt.s, got, tt.want)
		}
	}
}

func TestReadHeader(t *testing.T) {
	tests := []struct {
		name   string
		raw    string
		fields []Field
	}{
		{"crlf and folding", "Subject: a\r\n b\r\nTo: x@example.com\r\n\r\nbody: not a field\r\n", []Field{{"Subject", "a\r\n b"}, {"To", "x@example.com"}}},
		{"no body", "Subject: a", []Field{{"Subject", "a"}}},
		{"body without blank line", "Subject: a\nthis is body\nTo: no@example.com\n", []Field{{"Subject", "a"}}},
		{"leading continuation is body", " x\nSubject: a\n", nil},
		{"empty value", "Auto-Submitted:\nTo: a@example.com\n", []Field{{"Auto-Submitted", ""}, {"To", "a@example.com"}}},
		{"mbox From line", "From alice@example.org Mon Jan  1 00:00:00 2026\nSubject: a\n", []Field{{"Subject", "a"}}},
		{"space before colon", "Subject : a\nTo: b@example.com\n", []Field{{"Subject", "a"}, {"To", "b@example.com"}}},
		{"From line later is body", "Subject: a\nFrom alice Mon\nTo: b@example.com\n", []Field{{"Subject", "a"}}},
	}
	for _, tt := range tests {
		h, err := ReadHeader(strings.NewReader(tt.raw), Limits{})
		if err != nil {
			t.Errorf("ReadHeader(%s): %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(h.Fields, tt.fields) && !(len(h.Fields) == 0 && len(tt.fields) == 0) {
			t.Errorf("ReadHeader(%s) = %q, want %q", tt.name, h.Fields, tt.fields)
		}
	}
	if _, err := ReadHeader(strings.NewReader(""), Limits{}); err != ErrNoHeader {
		t.Errorf("ReadHeader(empty) error = %v, want ErrNoHeader", err)
	}
}

func TestReadHeaderHugeLine(t *testing.T) {
	raw := "Subject: " + strings.Repeat("x", 1<<20) + "\nTo: bob@example.com\n\n"
	h, err := ReadHeader(strings.NewReader(raw), Limits{MaxBytes: 64 << 10})
	if err != nil {
		t.Fatalf("ReadHeader(1 MiB line): %v", err)
	}
	if !h.Truncated {
		t.Errorf("ReadHeader(1 MiB line).Truncated = false, want true")
	}
	if got := h.Get("To"); got != "bob@example.com" {
		t.Errorf("ReadHeader(1 MiB line): To = %q, want the field after the long line kept", got)
	}
}

// TestManyRecipients: every recipient is judged, not only the first 64.
func TestManyRecipients(t *testing.T) {
	p := mustPolicy(t, DefaultConfig())
	var rs []Recipient
	for i := 0; i < 200; i++ {
		rs = append(rs, Recipient{Addr: fmt.Sprintf("user%d@example.com", i)})
	}
	v := p.Classify(Input{Envelope: Envelope{MailFrom: "alice@example.org", Rcpts: rs}, Header: hdr(t, "To: user150@example.com\nCc: user3@example.com\n\n")})
	for i, r := range v.Recipients {
		want := Suppress
		if i == 150 || i == 3 {
			want = Allow
		}
		if r.AutoReply != want {
			t.Errorf("recipient %d: %v %v, want %v", i, r.AutoReply, r.Reasons.List(), want)
		}
	}
	if v.AutoReply != Allow {
		t.Errorf("AutoReply = %v, want allow (two recipients are addressed)", v.AutoReply)
	}
}
