package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/textproto"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/replygate/replygate/internal/mtalab"
)

// The Postfix tests: a private Postfix whose milter lines and submission
// service come from contrib/postfix (what the README tells admins to
// add), replygate behind it on TCP, and an SMTP sink behind that.

// SASL logins of the lab (realm mtalab.SASLRealm).
const (
	pfJenkinsPass = "jenkins-secret"
	pfAlicePass   = "alice-secret"
)

// contribMilter is the milter address contrib/postfix/main.cf names; the
// tests put the daemon under test in its place.
const contribMilter = "inet:127.0.0.1:8894"

// contribPostfix renders contrib/postfix/main.cf and master.cf for a lab
// whose milter listens on milterAddr and whose mail goes to relay.
func contribPostfix(t testing.TB, milterAddr, relay string) mtalab.PostfixConfig {
	t.Helper()
	main, err := os.ReadFile(filepath.Join("..", "contrib", "postfix", "main.cf"))
	if err != nil {
		t.Fatal(err)
	}
	master, err := os.ReadFile(filepath.Join("..", "contrib", "postfix", "master.cf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(main), contribMilter) {
		t.Fatalf("contrib/postfix/main.cf no longer names %s; update the test with it", contribMilter)
	}
	return mtalab.PostfixConfig{
		Main:   strings.ReplaceAll(string(main), contribMilter, "inet:"+milterAddr),
		Master: string(master),
		Opts: map[string][]string{"submission": {
			// The lab has no certificate: contrib's "encrypt" cannot work.
			"smtpd_tls_security_level=none",
			// Let loopback clients submit without AUTH too, so that a test
			// can show that the daemon name alone makes mail outbound.
			"smtpd_client_restrictions=permit_mynetworks,permit_sasl_authenticated,reject",
		}},
		Relay: relay,
		Users: map[string]string{"jenkins": pfJenkinsPass, "alice": pfAlicePass},
	}
}

// pfLab is a sink, replygate and a Postfix in front of them.
type pfLab struct {
	sink *mtalab.Sink
	rg   *daemon
	pf   *mtalab.Postfix
}

// newPostfixLab starts the three with config as replygate's TOML.
func newPostfixLab(t testing.TB, config string) *pfLab {
	t.Helper()
	mtalab.NeedRoot(t)
	mtalab.Need(t, "postfix", "saslpasswd2")
	sink := mtalab.NewSink(t)
	rg := startReplygate(t, config)
	pf := mtalab.StartPostfix(t, contribPostfix(t, rg.Milter, sink.Addr()))
	return &pfLab{sink: sink, rg: rg, pf: pf}
}

// pfConfig is replygate's configuration in most Postfix tests: one
// machine sender, machine logins, and the trace header.
const pfConfig = `
[milter]
trace_header = true

[policy]
machine_senders = ["jenkins@ci.example.com"]
machine_logins = ["jenkins*"]
`

// pfMessage builds a test message whose Message-ID is <id@test.example>.
func pfMessage(id, from, to string, fields ...string) []byte {
	h := append([]string{
		"From: " + from,
		"To: " + to,
		"Subject: test " + id,
		"Message-ID: " + pfMsgID(id),
	}, fields...)
	return mtalab.Msg(h, "Hello from "+id+".\n")
}

func pfMsgID(id string) string { return "<" + id + "@test.example>" }

// pfVerdict is the "verdict" line replygate logs per message.
type pfVerdict struct {
	QueueID      string   `json:"queue_id"`
	Direction    string   `json:"direction"`
	MailFrom     string   `json:"mail_from"`
	AutoReply    string   `json:"auto_reply"`
	Reasons      []string `json:"reasons"`
	Stamp        bool     `json:"stamp"`
	StampReasons []string `json:"stamp_reasons"`
}

// pfVerdictFor waits for the verdict line naming queueID.
func pfVerdictFor(t testing.TB, d *daemon, queueID string) pfVerdict {
	t.Helper()
	var line map[string]any
	d.WaitLines(t, 10*time.Second, "verdict for queue id "+queueID, func(l []map[string]any) bool {
		for _, v := range filter(l, "verdict") {
			if v["queue_id"] == queueID {
				line = v
				return true
			}
		}
		return false
	})
	b, _ := json.Marshal(line)
	var v pfVerdict
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("verdict line %s: %v", b, err)
	}
	return v
}

// pfWant is what a test expects replygate to have made of one message.
type pfWant struct {
	direction   string   // inbound or outbound
	autoReply   string   // allow or suppress; "" not checked
	reasons     []string // each must be among the verdict's reasons
	stamp       bool
	stampReason string // must be among the stamp reasons when stamp
}

// pfCheckDelivered waits for the message with Message-ID id at the sink and
// checks it against w twice: in replygate's verdict line for its queue id
// and in what arrived (stamp fields, trace header). queueID, when not
// empty, is what Postfix answered at the end of DATA.
func pfCheckDelivered(t *testing.T, lab *pfLab, id, queueID, mailFrom string, sent []byte, w pfWant) {
	t.Helper()
	m := lab.sink.WaitMessageID(t, pfMsgID(id), 15*time.Second)
	qid := m.QueueID()
	if qid == "" {
		t.Fatalf("%s: no Postfix queue id in Received: %q", id, m.Values("Received"))
	}
	if queueID != "" && qid != queueID {
		t.Errorf("%s: Received names queue id %s, Postfix answered %s", id, qid, queueID)
	}
	v := pfVerdictFor(t, lab.rg, qid)
	if v.MailFrom != mailFrom {
		t.Errorf("%s: verdict mail_from = %q, want %q", id, v.MailFrom, mailFrom)
	}
	if v.Direction != w.direction {
		t.Errorf("%s: verdict direction = %q, want %q", id, v.Direction, w.direction)
	}
	if w.autoReply != "" && v.AutoReply != w.autoReply {
		t.Errorf("%s: verdict auto_reply = %q, want %q", id, v.AutoReply, w.autoReply)
	}
	if w.autoReply == "allow" && len(v.Reasons) != 0 {
		t.Errorf("%s: verdict reasons = %v, want none", id, v.Reasons)
	}
	for _, r := range w.reasons {
		if !slices.Contains(v.Reasons, r) {
			t.Errorf("%s: verdict reasons = %v, want %s among them", id, v.Reasons, r)
		}
	}
	if v.Stamp != w.stamp {
		t.Errorf("%s: verdict stamp = %t (reasons %v), want %t", id, v.Stamp, v.StampReasons, w.stamp)
	}
	if w.stamp && w.stampReason != "" && !slices.Contains(v.StampReasons, w.stampReason) {
		t.Errorf("%s: verdict stamp_reasons = %v, want %s among them", id, v.StampReasons, w.stampReason)
	}

	// What arrived.
	orig := mtalab.Message{Data: sent}
	xaar, as := m.Values("X-Allow-Auto-Reply"), m.Values("Auto-Submitted")
	if w.stamp {
		if !slices.Equal(xaar, []string{"no"}) || !slices.Equal(as, []string{"auto-generated"}) {
			t.Errorf("%s: arrived with X-Allow-Auto-Reply %q, Auto-Submitted %q; want stamped (no, auto-generated)", id, xaar, as)
		}
	} else if oxaar, oas := orig.Values("X-Allow-Auto-Reply"), orig.Values("Auto-Submitted"); !slices.Equal(xaar, oxaar) || !slices.Equal(as, oas) {
		t.Errorf("%s: arrived with X-Allow-Auto-Reply %q, Auto-Submitted %q; want them as sent (%q, %q)", id, xaar, as, oxaar, oas)
	}
	traces := m.Values("X-Replygate-Verdict")
	if len(traces) != 1 {
		t.Fatalf("%s: arrived with %d X-Replygate-Verdict fields %q, want 1", id, len(traces), traces)
	}
	tr := parseTraceHeader(traces[0])
	if tr["auto_reply"] != v.AutoReply || tr["direction"] != w.direction || tr["stamp"] != fmt.Sprint(w.stamp) {
		t.Errorf("%s: trace header %q disagrees with want %+v or the log line %+v", id, traces[0], w, v)
	}
	if got := strings.Join(v.Reasons, ","); tr["reasons"] != got {
		t.Errorf("%s: trace header reasons = %q, log line reasons = %q", id, tr["reasons"], got)
	}
}

// parseTraceHeader splits "suppress; reasons=a,b; direction=inbound; stamp=false".
func parseTraceHeader(s string) map[string]string {
	out := map[string]string{}
	for i, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if i == 0 {
			out["auto_reply"] = part
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		out[k] = v
	}
	return out
}

// TestPostfixOutbound: mail from a machine is stamped whichever way it
// leaves (submission service, SASL login on the plain port, the sendmail
// command), and a person's mail passes those same ways unstamped.
func TestPostfixOutbound(t *testing.T) {
	t.Parallel()
	lab := newPostfixLab(t, pfConfig)
	smtpAddr, subAddr := lab.pf.Addr(mtalab.SMTPService), lab.pf.Addr("submission")
	const rcpt = "dev@remote.example"

	for _, tt := range []struct {
		name       string
		via        string // smtp, submission or sendmail
		login, pwd string
		from       string
		want       pfWant
	}{
		// Outbound by daemon name only: no AUTH (the lab trusts loopback).
		{"submission-machine", "submission", "", "", "jenkins@ci.example.com",
			pfWant{direction: "outbound", stamp: true, stampReason: "machine-sender"}},
		{"submission-person", "submission", "alice", pfAlicePass, "alice@example.com",
			pfWant{direction: "outbound"}},
		// Outbound by SASL login on the plain port; a machine by login.
		{"sasl-machine-login", "smtp", "jenkins", pfJenkinsPass, "builds@ci.example.com",
			pfWant{direction: "outbound", stamp: true, stampReason: "machine-login"}},
		{"sasl-person", "smtp", "alice", pfAlicePass, "alice@example.com",
			pfWant{direction: "outbound"}},
		// The same machine sender without AUTH on the plain port is inbound.
		{"smtp-no-login", "smtp", "", "", "jenkins@ci.example.com",
			pfWant{direction: "inbound"}},
		// Local submission: non_smtpd_milters.
		{"sendmail-machine", "sendmail", "", "", "jenkins@ci.example.com",
			pfWant{direction: "outbound", stamp: true, stampReason: "machine-sender"}},
		{"sendmail-person", "sendmail", "", "", "alice@example.com",
			pfWant{direction: "outbound"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			msg := pfMessage(tt.name, tt.from, rcpt)
			var qid string
			switch tt.via {
			case "smtp":
				qid = mtalab.SendMail(t, smtpAddr, tt.login, tt.pwd, tt.from, []string{rcpt}, msg)
			case "submission":
				qid = mtalab.SendMail(t, subAddr, tt.login, tt.pwd, tt.from, []string{rcpt}, msg)
			case "sendmail":
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := lab.pf.Sendmail(ctx, tt.from, []string{rcpt}, msg); err != nil {
					t.Fatal(err)
				}
			}
			pfCheckDelivered(t, lab, tt.name, qid, tt.from, msg, tt.want)
		})
	}
}

// TestPostfixInboundSuppressed: list mail, a bounce and mail that opts
// out with X-Allow-Auto-Reply are judged suppress, as the log line and
// the trace header on the delivered message both say; a plain personal
// message is allowed.
func TestPostfixInboundSuppressed(t *testing.T) {
	t.Parallel()
	lab := newPostfixLab(t, pfConfig)
	const rcpt = "alice@example.com"
	bounce := mtalab.Msg([]string{
		"From: Mail Delivery System <MAILER-DAEMON@mx.remote.example>",
		"To: " + rcpt,
		"Subject: Undelivered Mail Returned to Sender",
		"Message-ID: " + pfMsgID("bounce"),
		`Content-Type: multipart/report; report-type=delivery-status; boundary="b1"`,
	}, `--b1
Content-Type: text/plain

I'm sorry to have to inform you that your pfMessage could not be delivered.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.remote.example

Final-Recipient: rfc822; nobody@remote.example
Action: failed
Status: 5.1.1

--b1--
`)
	for _, tt := range []struct {
		name string
		from string
		msg  []byte
		want pfWant
	}{
		{"list", "announce-owner@lists.example.org",
			pfMessage("list", "Announcements <announce@lists.example.org>", rcpt,
				"List-Id: Announcements <announce.lists.example.org>",
				"List-Unsubscribe: <mailto:announce-leave@lists.example.org>"),
			pfWant{direction: "inbound", autoReply: "suppress", reasons: []string{"list-header"}}},
		{"bounce", "", bounce,
			pfWant{direction: "inbound", autoReply: "suppress", reasons: []string{"null-sender", "report"}}},
		{"x-allow-auto-reply", "carol@remote.example",
			pfMessage("x-allow-auto-reply", "Carol <carol@remote.example>", rcpt, "X-Allow-Auto-Reply: no"),
			pfWant{direction: "inbound", autoReply: "suppress", reasons: []string{"x-allow-auto-reply"}}},
		{"personal", "carol@remote.example",
			pfMessage("personal", "Carol <carol@remote.example>", rcpt),
			pfWant{direction: "inbound", autoReply: "allow"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			qid := mtalab.SendMail(t, lab.pf.Addr(mtalab.SMTPService), "", "", tt.from, []string{rcpt}, tt.msg)
			pfCheckDelivered(t, lab, tt.name, qid, tt.from, tt.msg, tt.want)
		})
	}
}

// TestPostfixSessionMessages: several messages over one SMTP session are
// each judged with their own envelope and the session's connection data
// (daemon name, login), and each log line carries its own queue id.
func TestPostfixSessionMessages(t *testing.T) {
	t.Parallel()
	lab := newPostfixLab(t, pfConfig)
	const rcpt = "dev@remote.example"
	type msg struct {
		from string
		want pfWant
	}
	person := pfWant{direction: "outbound"}
	for _, tt := range []struct {
		name, service, login, pwd string
		msgs                      []msg
	}{
		// Submission (daemon name ORIGINATING) with a person's login:
		// only the machine sender's messages are stamped.
		{"submission-alice", "submission", "alice", pfAlicePass, []msg{
			{"jenkins@ci.example.com", pfWant{direction: "outbound", stamp: true, stampReason: "machine-sender"}},
			{"alice@example.com", person},
			{"jenkins@ci.example.com", pfWant{direction: "outbound", stamp: true, stampReason: "machine-sender"}},
		}},
		// Plain port, a machine's login: every message is outbound and
		// stamped by the login, whatever its sender.
		{"smtp-jenkins", mtalab.SMTPService, "jenkins", pfJenkinsPass, []msg{
			{"builds@ci.example.com", pfWant{direction: "outbound", stamp: true, stampReason: "machine-login"}},
			{"alice@example.com", pfWant{direction: "outbound", stamp: true, stampReason: "machine-login"}},
			{"", pfWant{direction: "outbound", stamp: true, stampReason: "machine-login"}},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := mtalab.Dial(t, lab.pf.Addr(tt.service))
			if err := c.Auth(tt.login, tt.pwd); err != nil {
				t.Fatalf("AUTH %s: %v", tt.login, err)
			}
			qids, sent := make([]string, len(tt.msgs)), make([][]byte, len(tt.msgs))
			for i, m := range tt.msgs {
				id := fmt.Sprintf("%s-%d", tt.name, i+1)
				sent[i] = pfMessage(id, "Someone <"+m.from+">", rcpt)
				qid, err := c.Send(m.from, []string{rcpt}, sent[i])
				if err != nil {
					t.Fatalf("message %d: %v", i+1, err)
				}
				qids[i] = qid
			}
			c.Quit()
			for i, m := range tt.msgs {
				pfCheckDelivered(t, lab, fmt.Sprintf("%s-%d", tt.name, i+1), qids[i], m.from, sent[i], m.want)
			}
			seen := map[string]int{}
			for _, v := range filter(lab.rg.WaitLines(t, time.Second, "", func([]map[string]any) bool { return true }), "verdict") {
				seen[fmt.Sprint(v["queue_id"])]++
			}
			for i, q := range qids {
				if seen[q] != 1 {
					t.Errorf("message %d (queue id %s): %d verdict lines, want 1", i+1, q, seen[q])
				}
			}
		})
	}
}

// TestPostfixMilterStopped: with replygate stopped, Postfix goes on
// accepting and delivering every message (milter_default_action =
// accept), by SMTP, submission and the sendmail command.
func TestPostfixMilterStopped(t *testing.T) {
	t.Parallel()
	lab := newPostfixLab(t, pfConfig)
	lab.rg.cmd.Process.Signal(syscall.SIGTERM)
	<-lab.rg.done
	if code := lab.rg.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("replygate exited %d after SIGTERM, want 0\n%s", code, lab.rg.Log())
	}

	const rcpt = "dev@remote.example"
	sent := 0
	c := mtalab.Dial(t, lab.pf.Addr(mtalab.SMTPService))
	for i := range 3 {
		if _, err := c.Send("carol@remote.example", []string{rcpt}, pfMessage(fmt.Sprintf("down-smtp-%d", i), "carol@remote.example", rcpt)); err != nil {
			t.Fatalf("SMTP message %d with replygate down: %v", i, err)
		}
		sent++
	}
	c.Quit()
	mtalab.SendMail(t, lab.pf.Addr("submission"), "alice", pfAlicePass, "alice@example.com", []string{rcpt}, pfMessage("down-submission", "alice@example.com", rcpt))
	sent++
	mtalab.SendMail(t, lab.pf.Addr(mtalab.SMTPService), "jenkins", pfJenkinsPass, "jenkins@ci.example.com", []string{rcpt}, pfMessage("down-sasl", "jenkins@ci.example.com", rcpt))
	sent++
	for i := range 2 {
		if err := lab.pf.Sendmail(context.Background(), "jenkins@ci.example.com", []string{rcpt}, pfMessage(fmt.Sprintf("down-local-%d", i), "jenkins@ci.example.com", rcpt)); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	msgs := lab.sink.WaitN(t, sent, 20*time.Second)
	pfCheckUnjudged(t, msgs, sent)
}

// pfCheckUnjudged checks that n distinct messages arrived and that none
// went through replygate.
func pfCheckUnjudged(t *testing.T, msgs []mtalab.Message, n int) {
	t.Helper()
	ids := map[string]bool{}
	for _, m := range msgs {
		ids[m.Get("Message-Id")] = true
		if tr := m.Values("X-Replygate-Verdict"); len(tr) != 0 {
			t.Errorf("%s: X-Replygate-Verdict %q with replygate down", m.Get("Message-Id"), tr)
		}
	}
	if len(msgs) != n || len(ids) != n {
		t.Errorf("sent %d messages, %d arrived (%d distinct)", n, len(msgs), len(ids))
	}
}

// TestPostfixMilterKilled: replygate killed with SIGKILL in the middle of
// an SMTP session, after MAIL or during DATA, loses no message: Postfix
// accepts the rest of the session, new sessions, and delivers them all.
func TestPostfixMilterKilled(t *testing.T) {
	t.Parallel()
	mtalab.NeedRoot(t)
	mtalab.Need(t, "postfix", "saslpasswd2")
	const rcpt = "dev@remote.example"
	newLab := func(t *testing.T) *pfLab {
		sink := mtalab.NewSink(t)
		rg := startKillableReplygate(t, mtalab.FreeAddr(t), pfConfig)
		return &pfLab{sink: sink, rg: rg, pf: mtalab.StartPostfix(t, contribPostfix(t, rg.Milter, sink.Addr()))}
	}
	kill := func(lab *pfLab) {
		lab.rg.cmd.Process.Kill()
		<-lab.rg.done
	}

	t.Run("after-MAIL", func(t *testing.T) {
		t.Parallel()
		lab := newLab(t)
		c := mtalab.Dial(t, lab.pf.Addr("submission"))
		if err := c.Auth("jenkins", pfJenkinsPass); err != nil {
			t.Fatal(err)
		}
		from := "jenkins@ci.example.com"
		msg1 := pfMessage("kill-1", from, rcpt)
		qid1, err := c.Send(from, []string{rcpt}, msg1)
		if err != nil {
			t.Fatal(err)
		}
		// Message 2: MAIL reaches replygate, then it dies.
		if err := c.Mail(from, nil); err != nil {
			t.Fatal(err)
		}
		kill(lab)
		if err := c.Rcpt(rcpt, nil); err != nil {
			t.Fatalf("RCPT after the milter died: %v", err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatalf("DATA after the milter died: %v", err)
		}
		w.Write(pfMessage("kill-2", from, rcpt))
		if err := w.Close(); err != nil {
			t.Fatalf("end of DATA after the milter died: %v", err)
		}
		// Message 3 in the same session, message 4 in a new one.
		if _, err := c.Send(from, []string{rcpt}, pfMessage("kill-3", from, rcpt)); err != nil {
			t.Fatalf("next message in the session: %v", err)
		}
		c.Quit()
		mtalab.SendMail(t, lab.pf.Addr("submission"), "jenkins", pfJenkinsPass, from, []string{rcpt}, pfMessage("kill-4", from, rcpt))

		msgs := lab.sink.WaitN(t, 4, 20*time.Second)
		pfCheckDelivered(t, lab, "kill-1", qid1, from, msg1, pfWant{direction: "outbound", stamp: true, stampReason: "machine-sender"})
		// The three sent after the kill, whatever order they arrived in.
		var after []mtalab.Message
		for _, m := range msgs {
			if m.Get("Message-Id") != pfMsgID("kill-1") {
				after = append(after, m)
			}
		}
		pfCheckUnjudged(t, after, 3)
	})

	t.Run("during-DATA", func(t *testing.T) {
		t.Parallel()
		lab := newLab(t)
		from := "carol@remote.example"
		c, err := textproto.Dial("tcp", lab.pf.Addr(mtalab.SMTPService))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		step := func(code int, format string, args ...any) {
			t.Helper()
			if format != "" {
				if _, err := c.Cmd(format, args...); err != nil {
					t.Fatal(err)
				}
			}
			if _, msg, err := c.ReadResponse(code); err != nil {
				t.Fatalf("%s: %v %s", fmt.Sprintf(format, args...), err, msg)
			}
		}
		step(220, "")
		step(250, "EHLO client.example")
		step(250, "MAIL FROM:<%s>", from)
		step(250, "RCPT TO:<%s>", rcpt)
		step(354, "DATA")
		msg := pfMessage("kill-data", from, rcpt)
		head, body, _ := strings.Cut(string(msg), "\r\n\r\n")
		dw := c.DotWriter()
		fmt.Fprint(dw, head+"\r\n")
		c.W.Flush() // the header is on its way to cleanup and the milter
		kill(lab)
		fmt.Fprint(dw, "X-After-Kill: yes\r\n\r\n"+body)
		if err := dw.Close(); err != nil {
			t.Fatal(err)
		}
		step(250, "")
		step(221, "QUIT")
		mtalab.SendMail(t, lab.pf.Addr(mtalab.SMTPService), "", "", from, []string{rcpt}, pfMessage("kill-data-next", from, rcpt))

		msgs := lab.sink.WaitN(t, 2, 20*time.Second)
		pfCheckUnjudged(t, msgs, 2)
	})
}

// TestPostfixEndOfDataLatency fails when replygate on TCP makes Postfix
// answer the end of DATA 40 ms or more after the final dot (median of
// 21 messages, one SMTP session each, as a lone client sends them). That
// is the delayed-ACK stall of ../shared/recipes/postfix.md: a milter that
// negotiates its replies away and does not re-arm TCP_QUICKACK costs
// ~44 ms per message; a healthy one costs a few. Not parallel: it runs
// while the other tests wait.
func TestPostfixEndOfDataLatency(t *testing.T) {
	lab := newPostfixLab(t, pfConfig)
	addr := lab.pf.Addr(mtalab.SMTPService)
	const rcpt = "alice@example.com"
	from := "carol@remote.example"
	send := func(i int) time.Duration {
		c := mtalab.Dial(t, addr)
		defer c.Close()
		if err := c.Mail(from, nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt(rcpt, nil); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(pfMessage(fmt.Sprintf("latency-%d", i), from, rcpt)); err != nil {
			t.Fatal(err)
		}
		start := time.Now() // Close writes the final dot and reads the reply
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		d := time.Since(start)
		c.Quit()
		return d
	}
	const warmup, n = 3, 21
	for i := range warmup {
		send(-1 - i)
	}
	times := make([]time.Duration, n)
	for i := range times {
		times[i] = send(i)
	}
	// Every message went through replygate: otherwise the number says
	// nothing about it.
	lab.rg.Verdicts(t, warmup+n, 10*time.Second)
	sorted := slices.Clone(times)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	median := sorted[n/2]
	t.Logf("end of DATA to 250: median %v, min %v, max %v", median, sorted[0], sorted[n-1])
	if median >= 40*time.Millisecond {
		t.Errorf("end of DATA to 250 took a median %v (>= 40ms: the delayed-ACK stall); all: %v", median, times)
	}
	lab.sink.WaitN(t, warmup+n, 20*time.Second)
}
