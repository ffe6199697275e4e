package mtalab

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

func TestSinkFailsOnDemand(t *testing.T) {
	s := NewSink(t)
	c := Dial(t, s.Addr())
	for _, tt := range []struct {
		rcpt string
		code int
	}{{"451@remote.example", 451}, {"550@remote.example", 550}} {
		if err := c.Mail("a@example.com", nil); err != nil {
			t.Fatal(err)
		}
		var se *smtp.SMTPError
		if err := c.Rcpt(tt.rcpt, nil); !errors.As(err, &se) || se.Code != tt.code {
			t.Errorf("Rcpt(%s) = %v, want code %d", tt.rcpt, err, tt.code)
		}
		c.Reset()
	}
	msg := Msg([]string{"From: a@example.com", "To: b@remote.example", "Message-ID: <sink-1@example.com>"}, "hello")
	if _, err := c.Send("a@example.com", []string{"b@remote.example", "550@remote.example"}, msg); err == nil {
		t.Errorf("Send with a failing recipient: want the RCPT error")
	}
	c.Reset()
	if _, err := c.Send("a@example.com", []string{"b@remote.example"}, msg); err != nil {
		t.Fatal(err)
	}
	m := s.WaitMessageID(t, "<sink-1@example.com>", 5*time.Second)
	if m.From != "a@example.com" || len(m.To) != 1 || m.To[0] != "b@remote.example" {
		t.Errorf("envelope = <%s> %v, want <a@example.com> [b@remote.example]", m.From, m.To)
	}
	if !strings.HasSuffix(string(m.Data), "hello\r\n") {
		t.Errorf("data = %q, want it to end with the body", m.Data)
	}
}

func TestRenderMaster(t *testing.T) {
	src := `# comment
submission inet n       -       y       -       -       smtpd
  -o smtpd_tls_security_level=encrypt
# between
cleanup   unix  n       -       y       -       0       cleanup
`
	n := 0
	addr := func() (string, error) { n++; return fmt.Sprintf("127.0.0.1:%d", 1000+n), nil }
	got, addrs, err := RenderMaster(src, map[string][]string{"submission": {"smtpd_tls_security_level=none"}}, addr)
	if err != nil {
		t.Fatal(err)
	}
	want := `# comment
127.0.0.1:1001 inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
# between
  -o smtpd_tls_security_level=none
cleanup unix n - n - 0 cleanup
`
	if got != want {
		t.Errorf("RenderMaster = \n%s\nwant\n%s", got, want)
	}
	if addrs["submission"] != "127.0.0.1:1001" || len(addrs) != 1 {
		t.Errorf("RenderMaster addrs = %v, want submission at 127.0.0.1:1001", addrs)
	}
	if _, _, err := RenderMaster(src, map[string][]string{"nosuch": {"a=b"}}, addr); err == nil {
		t.Errorf("RenderMaster with -o for a missing service: want an error")
	}
}

// TestPostfix relays through a private instance with no milter, by SMTP,
// SMTP with AUTH and the sendmail command, and checks the queue ids.
func TestPostfix(t *testing.T) {
	t.Parallel()
	sink := NewSink(t)
	start := time.Now()
	pf := StartPostfix(t, PostfixConfig{Relay: sink.Addr(), Users: map[string]string{"jenkins": "secret"}})
	t.Logf("postfix up in %v", time.Since(start))

	msg := func(id string) []byte {
		return Msg([]string{"From: a@example.com", "To: b@remote.example", "Message-ID: <" + id + "@example.com>"}, "hi")
	}
	id1 := SendMail(t, pf.Addr(SMTPService), "", "", "a@example.com", []string{"b@remote.example"}, msg("plain"))
	id2 := SendMail(t, pf.Addr(SMTPService), "jenkins", "secret", "a@example.com", []string{"b@remote.example"}, msg("auth"))
	if err := pf.Sendmail(context.Background(), "root@lab.example", []string{"b@remote.example"}, msg("local")); err != nil {
		t.Fatal(err)
	}
	c := Dial(t, pf.Addr(SMTPService))
	if err := c.Auth("jenkins", "wrong"); err == nil {
		t.Errorf("AUTH with a wrong password: want an error")
	}

	for id, qid := range map[string]string{"plain": id1, "auth": id2, "local": ""} {
		m := sink.WaitMessageID(t, "<"+id+"@example.com>", 10*time.Second)
		if qid != "" && m.QueueID() != qid {
			t.Errorf("%s: Received names queue id %q, Postfix answered %q", id, m.QueueID(), qid)
		}
		if m.QueueID() == "" {
			t.Errorf("%s: no queue id in Received: %q", id, m.Values("Received"))
		}
	}
	if log := pf.Log(); !strings.Contains(log, "sasl_username=jenkins@"+SASLRealm) {
		t.Errorf("maillog has no sasl_username=jenkins@%s:\n%s", SASLRealm, log)
	}
	start = time.Now()
	if err := pf.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("postfix stopped in %v", time.Since(start))
	if err := WaitListening(pf.Addr(SMTPService), 100*time.Millisecond); err == nil {
		t.Errorf("%s still listening after Stop", pf.Addr(SMTPService))
	}
}

// TestSinkHold: a held sink leaves RCPT unanswered until Release, which
// refuses it for now; then it serves as usual.
func TestSinkHold(t *testing.T) {
	s := NewSink(t)
	s.Hold()
	c := Dial(t, s.Addr())
	if err := c.Mail("a@example.com", nil); err != nil {
		t.Fatal(err)
	}
	rcpt := make(chan error, 1)
	go func() { rcpt <- c.Rcpt("b@remote.example", nil) }()
	if got := s.WaitHeld(t, 1, 5*time.Second); got[0] != "b@remote.example" {
		t.Errorf("Held() = %v, want [b@remote.example]", got)
	}
	select {
	case err := <-rcpt:
		t.Fatalf("Rcpt answered while held: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	s.Release()
	var se *smtp.SMTPError
	if err := <-rcpt; !errors.As(err, &se) || se.Code != 451 {
		t.Errorf("Rcpt after Release = %v, want 451", err)
	}
	c.Reset()
	msg := Msg([]string{"From: a@example.com", "To: b@remote.example", "Message-ID: <hold-1@example.com>"}, "hello")
	if _, err := c.Send("a@example.com", []string{"b@remote.example"}, msg); err != nil {
		t.Fatalf("Send after Release = %v", err)
	}
	s.WaitMessageID(t, "<hold-1@example.com>", 5*time.Second)
}
