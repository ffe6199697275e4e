package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/replygate/replygate/internal/mtalab"
)

// sendmailConfig is replygate's config for the Sendmail tests: the trace
// header shows each verdict on the delivered message, and two robots.
const sendmailConfig = `
[milter]
trace_header = true

[policy]
machine_senders = ["jenkins@example.test", "monitor@example.test"]
outbound_daemons = ["ORIGINATING", "MSA"]
`

// startSendmail runs replygate and the sink, and builds a Sendmail whose
// sendmail.mc holds contrib/sendmail/replygate.mc pointed at them.
func startSendmail(t *testing.T, daemons ...string) (*daemon, *mtalab.Sendmail, *mtalab.Sink) {
	t.Helper()
	return startSendmailWith(t, sendmailConfig, mtalab.SendmailConfig{Daemons: daemons})
}

// startSendmailWith is startSendmail with replygate's config and the
// Sendmail lab's daemons and MSP given; Admin, Milter and Relay are
// filled in.
func startSendmailWith(t *testing.T, config string, cfg mtalab.SendmailConfig) (*daemon, *mtalab.Sendmail, *mtalab.Sink) {
	t.Helper()
	mtalab.NeedSendmail(t) // skip (or fail under CI=true) before starting anything
	admin, err := os.ReadFile(filepath.Join("..", "contrib", "sendmail", "replygate.mc"))
	if err != nil {
		t.Fatal(err)
	}
	sink := mtalab.NewSink(t)
	rg := startReplygate(t, config)
	cfg.Admin, cfg.Milter, cfg.Relay = string(admin), rg.Milter, sink.Addr()
	sm := mtalab.NewSendmail(t, cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sendmail.mc:\n%s\nsendmail debug log:\n%s\nreplygate log:\n%s", sm.MC, sm.Log(), rg.Log())
		}
	})
	return rg, sm, sink
}

// smMessage is a small message whose Message-ID is smMsgID(subject).
func smMessage(from, to, subject string) []byte {
	return mtalab.Msg([]string{
		"From: " + from,
		"To: " + to,
		"Subject: " + subject,
		"Message-ID: " + smMsgID(subject),
	}, "Hello.\n")
}

func smMsgID(subject string) string {
	return "<" + strings.ReplaceAll(subject, " ", ".") + "@client.example>"
}

// smCheckStamp checks that the sink's copy carries the outbound stamp, or
// neither of its fields.
func smCheckStamp(t *testing.T, m mtalab.Message, want bool) {
	t.Helper()
	xa, as := m.Values("X-Allow-Auto-Reply"), m.Values("Auto-Submitted")
	if want {
		if len(xa) != 1 || xa[0] != "no" || len(as) != 1 || as[0] != "auto-generated" {
			t.Errorf("message %s: X-Allow-Auto-Reply %q, Auto-Submitted %q; want [no] and [auto-generated]\n%s",
				m.Get("Message-Id"), xa, as, m.Data)
		}
		return
	}
	if len(xa) != 0 || len(as) != 0 {
		t.Errorf("message %s: X-Allow-Auto-Reply %q, Auto-Submitted %q; want neither\n%s",
			m.Get("Message-Id"), xa, as, m.Data)
	}
}

// TestSendmailStampsMachineMail: a robot's message submitted locally
// (sendmail -bs, which Sendmail reports to the milter as a connection of
// family "unknown") is outbound and arrives stamped; a person's arrives
// as sent, with only the trace header.
func TestSendmailStampsMachineMail(t *testing.T) {
	t.Parallel()
	rg, sm, sink := startSendmail(t)

	for _, tt := range []struct {
		name, from string
		stamp      bool
	}{
		{"machine", "jenkins@example.test", true},
		{"person", "alice@example.test", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := sm.Session(t)
			subject := "sendmail " + tt.name
			id, err := s.Send(tt.from, []string{"bob@remote.example"}, smMessage(tt.from, "bob@remote.example", subject))
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			s.Quit()
			m := sink.WaitMessageID(t, smMsgID(subject), 20*time.Second)
			smCheckStamp(t, m, tt.stamp)
			trace := fmt.Sprintf("direction=outbound; stamp=%t", tt.stamp)
			if got := m.Get("X-Replygate-Verdict"); !strings.Contains(got, trace) {
				t.Errorf("X-Replygate-Verdict = %q, want it to contain %q", got, trace)
			}
			if got := mtalab.SendmailQueueID(m); got != id {
				t.Errorf("queue id in Received = %q, want %q (from the end-of-data reply)", got, id)
			}
			v := smVerdictFor(t, rg, id)
			if v["direction"] != "outbound" || v["stamp"] != tt.stamp || v["mail_from"] != tt.from {
				t.Errorf("verdict line %v: want direction outbound, stamp %t, mail_from %s", v, tt.stamp, tt.from)
			}
		})
	}
}

// smVerdictFor waits for the verdict line with the given queue id.
func smVerdictFor(t *testing.T, rg *daemon, id string) map[string]any {
	t.Helper()
	var v map[string]any
	rg.WaitLines(t, 10*time.Second, "a verdict for "+id, func(lines []map[string]any) bool {
		for _, l := range filter(lines, "verdict") {
			if l["queue_id"] == id {
				v = l
				return true
			}
		}
		return false
	})
	return v
}

// TestSendmailSessionJudgesEachMessage sends three messages over one SMTP
// session. go-milter hands each message to a fresh backend and keeps
// stale macros between them; each must still be judged with its own
// envelope and logged with its own queue id, the one Sendmail assigned.
func TestSendmailSessionJudgesEachMessage(t *testing.T) {
	t.Parallel()
	rg, sm, sink := startSendmail(t)

	sent := []struct {
		from  string
		stamp bool
		id    string
	}{
		{from: "jenkins@example.test", stamp: true},
		{from: "alice@example.test", stamp: false},
		{from: "monitor@example.test", stamp: true},
	}
	s := sm.Session(t)
	for i := range sent {
		subject := fmt.Sprintf("session message %d", i+1)
		id, err := s.Send(sent[i].from, []string{"bob@remote.example"}, smMessage(sent[i].from, "bob@remote.example", subject))
		if err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
		sent[i].id = id
	}
	if err := s.Quit(); err != nil {
		t.Errorf("QUIT: %v", err)
	}

	msgs := sink.WaitN(t, len(sent), 20*time.Second)
	verdicts := rg.Verdicts(t, len(sent), 10*time.Second)
	if len(verdicts) != len(sent) {
		t.Fatalf("%d verdict lines, want %d", len(verdicts), len(sent))
	}
	seen := map[string]bool{}
	for i, want := range sent {
		v := verdicts[i]
		if v["mail_from"] != want.from || v["stamp"] != want.stamp || v["queue_id"] != want.id || v["direction"] != "outbound" {
			t.Errorf("verdict %d = mail_from %v, stamp %v, queue_id %v, direction %v; want %s, %t, %s, outbound",
				i+1, v["mail_from"], v["stamp"], v["queue_id"], v["direction"], want.from, want.stamp, want.id)
		}
		if seen[want.id] {
			t.Errorf("queue id %s given twice", want.id)
		}
		seen[want.id] = true
		m := msgs[i]
		if m.From != want.from {
			t.Errorf("sink message %d from <%s>, want <%s>", i+1, m.From, want.from)
			continue
		}
		if got := mtalab.SendmailQueueID(m); got != want.id {
			t.Errorf("sink message %d: queue id in Received %q, want %q", i+1, got, want.id)
		}
		smCheckStamp(t, m, want.stamp)
	}
}

// TestSendmailDaemonName follows contrib/sendmail/replygate.mc: mail to
// the listener named MSA (the submission port's usual name) is outbound
// when outbound_daemons lists it; the same robot's mail to the MTA
// listener is inbound and left alone.
func TestSendmailDaemonName(t *testing.T) {
	t.Parallel()
	rg, sm, sink := startSendmail(t, "MTA", "MSA")
	sm.StartDaemon(t)

	for _, tt := range []struct {
		daemon, direction string
		stamp             bool
	}{
		{"MSA", "outbound", true},
		{"MTA", "inbound", false},
	} {
		c := mtalab.Dial(t, sm.Addr(tt.daemon))
		subject := "daemon " + tt.daemon
		from := "jenkins@example.test"
		if err := c.Mail(from, nil); err != nil {
			t.Fatalf("%s: MAIL: %v", tt.daemon, err)
		}
		if err := c.Rcpt("bob@remote.example", nil); err != nil {
			t.Fatalf("%s: RCPT: %v", tt.daemon, err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatalf("%s: DATA: %v", tt.daemon, err)
		}
		w.Write(smMessage(from, "bob@remote.example", subject))
		if err := w.Close(); err != nil {
			t.Fatalf("%s: end of DATA: %v", tt.daemon, err)
		}
		c.Quit()
		m := sink.WaitMessageID(t, smMsgID(subject), 20*time.Second)
		smCheckStamp(t, m, tt.stamp)
		v := smVerdictFor(t, rg, mtalab.SendmailQueueID(m))
		if v["direction"] != tt.direction || v["stamp"] != tt.stamp {
			t.Errorf("%s: verdict %v, want direction %s, stamp %t", tt.daemon, v, tt.direction, tt.stamp)
		}
	}
}

// TestSendmailSubmissionProgram follows a cron job's or a bug tracker's
// message on a stock Debian Sendmail: /usr/sbin/sendmail runs the mail
// submission program (submit.cf), which relays over SMTP to the MTA
// daemon on 127.0.0.1:25. The milter never sees a local submission, only
// a client at 127.0.0.1 on the MTA daemon, so the message is inbound and
// unstamped unless the admin lists loopback in internal_networks, as
// contrib/sendmail/replygate.mc says.
func TestSendmailSubmissionProgram(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, config, direction string
		stamp                   bool
	}{
		{"default", sendmailConfig, "inbound", false},
		{"internal_networks", sendmailConfig + `internal_networks = ["127.0.0.1/32", "::1/128"]` + "\n", "outbound", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rg, sm, sink := startSendmailWith(t, tt.config, mtalab.SendmailConfig{Daemons: []string{"MTA"}, MSP: "MTA"})
			sm.StartDaemon(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			from, subject := "jenkins@example.test", "msp "+tt.name
			if err := sm.Submit(ctx, from, []string{"bob@remote.example"}, smMessage(from, "bob@remote.example", subject)); err != nil {
				t.Fatal(err)
			}
			m := sink.WaitMessageID(t, smMsgID(subject), 20*time.Second)
			smCheckStamp(t, m, tt.stamp)
			v := smVerdictFor(t, rg, mtalab.SendmailQueueID(m))
			if v["direction"] != tt.direction || v["stamp"] != tt.stamp {
				t.Errorf("verdict %v, want direction %s, stamp %t", v, tt.direction, tt.stamp)
			}
		})
	}
}

// TestSendmailMilterDown: with contrib's lines (no F= flag), mail keeps
// flowing when replygate is not running: Sendmail skips the milter and
// delivers the message as sent.
func TestSendmailMilterDown(t *testing.T) {
	t.Parallel()
	mtalab.NeedSendmail(t)
	admin, err := os.ReadFile(filepath.Join("..", "contrib", "sendmail", "replygate.mc"))
	if err != nil {
		t.Fatal(err)
	}
	sink := mtalab.NewSink(t)
	sm := mtalab.NewSendmail(t, mtalab.SendmailConfig{
		Admin:  string(admin),
		Milter: mtalab.FreeAddr(t), // nothing listens there
		Relay:  sink.Addr(),
	})
	s := sm.Session(t)
	from, subject := "jenkins@example.test", "milter down"
	if _, err := s.Send(from, []string{"bob@remote.example"}, smMessage(from, "bob@remote.example", subject)); err != nil {
		t.Fatalf("send with the milter down: %v\n%s", err, sm.Log())
	}
	s.Quit()
	m := sink.WaitMessageID(t, smMsgID(subject), 20*time.Second)
	smCheckStamp(t, m, false)
	if v := m.Values("X-Replygate-Verdict"); len(v) != 0 {
		t.Errorf("X-Replygate-Verdict %q on a message no milter saw", v)
	}
}
