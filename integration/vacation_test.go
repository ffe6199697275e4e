package integration

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net"
	"net/textproto"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	gomilter "github.com/emersion/go-milter"

	"github.com/replygate/replygate/internal/mtalab"
	"github.com/replygate/replygate/vacation/store"
)

// vacationConfig relays replies to the sink (relay is filled in).
const vacationConfig = `relay = %q

[vacation]
hostname = "mx.example.com"
`

// setVacation runs `replygate vacation set` against the daemon's state.
func setVacation(t *testing.T, d *daemon, args ...string) {
	t.Helper()
	out, err := exec.Command(replygateBin, append([]string{"vacation", "set", "--state", filepath.Join(d.Dir, "state")}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("replygate vacation set %q: %v\n%s", args, err, out)
	}
}

// replies returns the vacation replies at the sink: sent from the null
// sender and marked auto-replied (the bounce in the test has the first
// and not the second).
func replies(msgs []mtalab.Message) []mtalab.Message {
	var out []mtalab.Message
	for _, m := range msgs {
		if m.From == "" && m.Get("Auto-Submitted") == "auto-replied" {
			out = append(out, m)
		}
	}
	return out
}

func repliesTo(msgs []mtalab.Message, rcpt string) []mtalab.Message {
	var out []mtalab.Message
	for _, m := range replies(msgs) {
		if len(m.To) == 1 && m.To[0] == rcpt {
			out = append(out, m)
		}
	}
	return out
}

// TestVacationThroughPostfix: a user on vacation answers a person once,
// and nobody else: not lists, not opted-out senders, not Bcc copies, not
// bounces, and not outside the vacation's window.
func TestVacationThroughPostfix(t *testing.T) {
	t.Parallel()
	mtalab.NeedRoot(t)
	mtalab.Need(t, "postfix", "saslpasswd2")
	sink := mtalab.NewSink(t)
	rg := startReplygate(t, fmt.Sprintf(vacationConfig, sink.Addr()))
	pf := mtalab.StartPostfix(t, contribPostfix(t, rg.Milter, sink.Addr()))
	setVacation(t, rg, "bob@example.com", "--from-name", "Bob Müller", "--alias", "robert@example.com",
		"--body", "Ich bin im Urlaub und lese keine Mail.\nZurück am 3. Januar — Grüße!\n")
	setVacation(t, rg, "carol@example.com", "--body", "Away later.", "--start", time.Now().AddDate(5, 0, 0).Format(time.DateOnly))

	smtp := pf.Addr(mtalab.SMTPService)
	send := func(from, rcpt, id string, fields ...string) {
		t.Helper()
		mtalab.SendMail(t, smtp, "", "", from, []string{rcpt}, pfMessage(id, from, rcpt, fields...))
	}
	subject := mime.QEncoding.Encode("utf-8", "Grüße aus Köln")
	mtalab.SendMail(t, smtp, "", "", "alice@remote.example", []string{"bob@example.com"},
		mtalab.Msg([]string{"From: Alice <alice@remote.example>", "To: Bob <bob@example.com>", "Subject: " + subject,
			"Message-ID: <vac-1@remote.example>"}, "Hallo Bob!\n"))

	// The reply, with every field RFC 3834 and DESIGN.md ask for.
	got := sink.WaitFor(t, 20*time.Second, "the reply to alice", func(m []mtalab.Message) bool {
		return len(repliesTo(m, "alice@remote.example")) > 0
	})
	r := repliesTo(got, "alice@remote.example")[0]
	mr, err := mail.CreateReader(strings.NewReader(string(r.Data)))
	if err != nil {
		t.Fatalf("reply does not parse: %v\n%s", err, r.Data)
	}
	h := mr.Header
	subj, _ := h.Subject()
	for _, c := range []struct{ field, got, want string }{
		{"Subject", subj, "Auto: Grüße aus Köln"},
		{"Auto-Submitted", h.Get("Auto-Submitted"), "auto-replied"},
		{"X-Allow-Auto-Reply", h.Get("X-Allow-Auto-Reply"), "no"},
		{"X-Auto-Response-Suppress", h.Get("X-Auto-Response-Suppress"), "All"},
		{"Precedence", h.Get("Precedence"), "bulk"},
		{"In-Reply-To", h.Get("In-Reply-To"), "<vac-1@remote.example>"},
	} {
		if c.got != c.want {
			t.Errorf("reply %s = %q, want %q", c.field, c.got, c.want)
		}
	}
	if refs := h.Get("References"); !strings.Contains(refs, "<vac-1@remote.example>") {
		t.Errorf("reply References = %q, want the original's Message-ID", refs)
	}
	if from, err := h.AddressList("From"); err != nil || len(from) != 1 || from[0].Address != "bob@example.com" || from[0].Name != "Bob Müller" {
		t.Errorf("reply From = %v, %v; want Bob Müller <bob@example.com>", from, err)
	}
	if h.Get("Date") == "" || h.Get("Message-Id") == "" {
		t.Errorf("reply lacks Date or Message-ID")
	}
	p, err := mr.NextPart()
	if err != nil {
		t.Fatalf("reply body: %v", err)
	}
	if ct := p.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") || !strings.Contains(ct, "utf-8") {
		t.Errorf("reply Content-Type = %q, want text/plain; charset=utf-8", ct)
	}
	body, _ := io.ReadAll(p.Body)
	if !strings.Contains(string(body), "Zurück am 3. Januar — Grüße!") {
		t.Errorf("reply body = %q, want the UTF-8 vacation text", body)
	}
	if strings.Contains(string(r.Data), "Hallo Bob") {
		t.Errorf("reply quotes the original body")
	}

	// Within the interval the same sender gets nothing more.
	send("alice@remote.example", "bob@example.com", "vac-2")
	rg.WaitLines(t, 20*time.Second, "the duplicate", func(l []map[string]any) bool {
		return len(filter(l, "reply already sent this period")) > 0
	})

	// Mail that must not be answered.
	send("dave@remote.example", "bob@example.com", "vac-list", "List-Id: <dev.lists.remote.example>")
	send("erin@remote.example", "bob@example.com", "vac-optout", "X-Allow-Auto-Reply: no")
	mtalab.SendMail(t, smtp, "", "", "frank@remote.example", []string{"bob@example.com"},
		pfMessage("vac-bcc", "frank@remote.example", "team@remote.example")) // bob only in the envelope: a Bcc copy
	mtalab.SendMail(t, smtp, "", "", "", []string{"bob@example.com"},
		pfMessage("vac-bounce", "MAILER-DAEMON@remote.example", "bob@example.com"))
	send("grace@remote.example", "carol@example.com", "vac-window") // carol's vacation starts in five years

	// Addressed by an alias only: the gate learns bob's aliases from the
	// store (within a refresh) and lets the reply through.
	rg.WaitLines(t, 20*time.Second, "bob's alias loaded", func(l []map[string]any) bool {
		for _, r := range filter(l, "lookups loaded") {
			if n, _ := r["aliases"].(float64); n > 0 {
				return true
			}
		}
		return false
	})
	mtalab.SendMail(t, smtp, "", "", "ivan@remote.example", []string{"bob@example.com"},
		pfMessage("vac-alias", "ivan@remote.example", "robert@example.com"))

	// A control that is answered: once its reply is there, the messages
	// before it have been judged and any reply of theirs queued before it.
	send("heidi@remote.example", "bob@example.com", "vac-control")
	sink.WaitFor(t, 20*time.Second, "the reply to heidi", func(m []mtalab.Message) bool {
		return len(repliesTo(m, "heidi@remote.example")) > 0
	})
	rg.Verdicts(t, 9, 10*time.Second)
	// Offer queues while the MTA waits, so by the control's reply every
	// reply that will ever be sent for these messages has been queued.
	if q := filter(rg.records(), "reply queued"); len(q) != 3 {
		t.Errorf("%d replies queued, want 3 (alice once, ivan, heidi)\n%s", len(q), rg.Log())
	}
	all := sink.WaitFor(t, 20*time.Second, "all 9 originals and 3 replies", func(m []mtalab.Message) bool {
		return len(m)-len(replies(m)) >= 9 && len(replies(m)) >= 3
	})
	if rs := replies(all); len(rs) != 3 || len(repliesTo(all, "ivan@remote.example")) != 1 {
		var to []string
		for _, r := range rs {
			to = append(to, strings.Join(r.To, ","))
		}
		t.Errorf("%d replies (to %v), want 3: alice once, ivan (by alias) and heidi\n%s", len(rs), to, rg.Log())
	}
}

// TestVacationKilledBeforeSend: replygate is killed with SIGKILL after a
// reply was queued and before it was sent (the relay is down); after a
// restart the reply goes out exactly once.
func TestVacationKilledBeforeSend(t *testing.T) {
	t.Parallel()
	mtalab.NeedRoot(t)
	mtalab.Need(t, "postfix", "saslpasswd2")
	sink := mtalab.NewSink(t)
	dir := t.TempDir()
	milterAddr := mtalab.FreeAddr(t)
	down := mtalab.FreeAddr(t) // nothing listens: the relay is down
	rg := spawnReplygateIn(t, dir, milterAddr, fmt.Sprintf(vacationConfig, down))
	t.Cleanup(func() { rg.cmd.Process.Kill(); <-rg.done })
	rg.waitReady(t)
	pf := mtalab.StartPostfix(t, contribPostfix(t, milterAddr, sink.Addr()))
	setVacation(t, rg, "bob@example.com", "--body", "Away.")

	mtalab.SendMail(t, pf.Addr(mtalab.SMTPService), "", "", "alice@remote.example", []string{"bob@example.com"},
		pfMessage("kill-vac", "alice@remote.example", "bob@example.com"))
	rg.WaitLines(t, 20*time.Second, "the deferred reply", func(l []map[string]any) bool {
		return len(filter(l, "reply deferred")) > 0
	})
	rg.cmd.Process.Signal(syscall.SIGKILL)
	<-rg.done

	// The same state, now with the relay up.
	rg2 := spawnReplygateIn(t, dir, milterAddr, fmt.Sprintf(vacationConfig, sink.Addr()))
	t.Cleanup(func() { rg2.cmd.Process.Kill(); <-rg2.done })
	rg2.waitReady(t)
	sink.WaitFor(t, 30*time.Second, "the reply after the restart", func(m []mtalab.Message) bool {
		return len(repliesTo(m, "alice@remote.example")) > 0
	})
	rg2.WaitLines(t, 10*time.Second, "reply sent", func(l []map[string]any) bool { return len(filter(l, "reply sent")) > 0 })
	rg2.cmd.Process.Signal(syscall.SIGTERM)
	<-rg2.done

	st, err := store.OpenSQLite(filepath.Join(dir, "state", "replygate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if n, err := st.OutboxLen(context.Background()); err != nil || n != 0 {
		t.Errorf("outbox holds %d replies (%v) after the send, want 0", n, err)
	}
	if rs := repliesTo(sink.Messages(), "alice@remote.example"); len(rs) != 1 {
		t.Errorf("%d replies to alice, want exactly 1", len(rs))
	}
}

// arMilter is a border milter that runs before replygate, as OpenDMARC or
// rspamd would: it adds an Authentication-Results field of authserv-id
// mx.example.com at the top, with the result the test's sender asks for
// in its X-Test-Auth field.
type arMilter struct {
	result string
}

func (m *arMilter) Connect(string, string, uint16, net.IP, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}
func (m *arMilter) Helo(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}
func (m *arMilter) MailFrom(string, *gomilter.Modifier) (gomilter.Response, error) {
	m.result = ""
	return gomilter.RespContinue, nil
}
func (m *arMilter) RcptTo(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}
func (m *arMilter) Header(name, value string, _ *gomilter.Modifier) (gomilter.Response, error) {
	if strings.EqualFold(name, "X-Test-Auth") {
		m.result = strings.TrimSpace(value)
	}
	return gomilter.RespContinue, nil
}
func (m *arMilter) Headers(textproto.MIMEHeader, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}
func (m *arMilter) BodyChunk([]byte, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}
func (m *arMilter) Body(mod *gomilter.Modifier) (gomilter.Response, error) {
	if m.result != "" {
		if err := mod.InsertHeader(0, "Authentication-Results", "mx.example.com; "+m.result); err != nil {
			return nil, err
		}
	}
	return gomilter.RespAccept, nil
}
func (m *arMilter) Abort(*gomilter.Modifier) error { return nil }

// TestVacationSenderAuthThroughPostfix: with trusted_authserv_id set, a
// border milter's Authentication-Results decides who is answered, and a
// forged field with the same authserv-id below it changes nothing.
func TestVacationSenderAuthThroughPostfix(t *testing.T) {
	t.Parallel()
	mtalab.NeedRoot(t)
	mtalab.Need(t, "postfix", "saslpasswd2")
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ar := &gomilter.Server{NewMilter: func() gomilter.Milter { return &arMilter{} }, Actions: gomilter.OptAddHeader | gomilter.OptChangeHeader}
	go ar.Serve(ln)
	t.Cleanup(func() { ar.Close() })

	sink := mtalab.NewSink(t)
	rg := startReplygate(t, fmt.Sprintf(vacationConfig, sink.Addr())+`trusted_authserv_id = "mx.example.com"`+"\n")
	cfg := contribPostfix(t, rg.Milter, sink.Addr())
	// The border milter runs first, as OpenDMARC would be listed first.
	cfg.Main = strings.Replace(cfg.Main, "smtpd_milters = inet:"+rg.Milter, "smtpd_milters = inet:"+ln.Addr().String()+", inet:"+rg.Milter, 1)
	if !strings.Contains(cfg.Main, ln.Addr().String()) {
		t.Fatalf("could not put the border milter before replygate in main.cf:\n%s", cfg.Main)
	}
	pf := mtalab.StartPostfix(t, cfg)
	setVacation(t, rg, "bob@example.com", "--body", "Away.")
	smtp := pf.Addr(mtalab.SMTPService)
	send := func(from, id string, fields ...string) {
		t.Helper()
		mtalab.SendMail(t, smtp, "", "", from, []string{"bob@example.com"}, pfMessage(id, from, "bob@example.com", fields...))
	}
	send("alice@remote.example", "auth-pass", "X-Test-Auth: dkim=pass header.d=remote.example; spf=pass smtp.mailfrom=remote.example")
	send("mallory@remote.example", "auth-fail", "X-Test-Auth: spf=fail smtp.mailfrom=remote.example; dkim=none; dmarc=fail",
		"Authentication-Results: mx.example.com; dkim=pass header.d=remote.example") // forged, below the border's
	send("heidi@remote.example", "auth-control", "X-Test-Auth: dmarc=pass header.from=remote.example")
	all := sink.WaitFor(t, 20*time.Second, "the replies to alice and heidi", func(m []mtalab.Message) bool {
		return len(repliesTo(m, "alice@remote.example")) > 0 && len(repliesTo(m, "heidi@remote.example")) > 0
	})
	if rs := repliesTo(all, "mallory@remote.example"); len(rs) != 0 {
		t.Errorf("a reply went to mallory, whose only pass was a forged field")
	}
	if q := filter(rg.records(), "no reply to an unauthenticated sender"); len(q) != 1 {
		t.Errorf("%d unauthenticated senders logged, want 1 (mallory)\n%s", len(q), rg.Log())
	}
}
