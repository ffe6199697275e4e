package milter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/replygate/replygate/policy"
)

// nullMilter is the floor for any go-milter milter: the same negotiation
// as replygate, and at end of message it adds the header and accepts,
// without judging anything.
type nullMilter struct{}

func (nullMilter) Connect(string, string, uint16, net.IP, *gomilter.Modifier) (gomilter.Response, error) {
	return nil, nil
}
func (nullMilter) Helo(string, *gomilter.Modifier) (gomilter.Response, error)     { return nil, nil }
func (nullMilter) MailFrom(string, *gomilter.Modifier) (gomilter.Response, error) { return nil, nil }
func (nullMilter) RcptTo(string, *gomilter.Modifier) (gomilter.Response, error)   { return nil, nil }
func (nullMilter) Header(string, string, *gomilter.Modifier) (gomilter.Response, error) {
	return nil, nil
}
func (nullMilter) Headers(textproto.MIMEHeader, *gomilter.Modifier) (gomilter.Response, error) {
	return nil, nil
}
func (nullMilter) BodyChunk([]byte, *gomilter.Modifier) (gomilter.Response, error) { return nil, nil }
func (nullMilter) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	if err := m.AddHeader("X-Allow-Auto-Reply", "no"); err != nil {
		return nil, err
	}
	return gomilter.RespAccept, nil
}
func (nullMilter) Abort(*gomilter.Modifier) error { return nil }

// benchHeader is the Postfix lab's message: 12 fields.
var benchHeader = [][2]string{
	{"Received", "from mx.example.org (mx.example.org [192.0.2.1]) by mx.example.com (Postfix) with ESMTP id 4XyZ1; Mon, 23 Nov 2026 10:00:00 +0000"},
	{"Received", "from client.example.org by mx.example.org; Mon, 23 Nov 2026 09:59:59 +0000"},
	{"Date", "Mon, 23 Nov 2026 09:59:58 +0000"},
	{"From", "Alice <alice@example.org>"},
	{"To", "Bob <bob@example.com>"},
	{"Subject", "Lunch on Friday?"},
	{"Message-ID", "<20261123095958.1234@example.org>"},
	{"MIME-Version", "1.0"},
	{"Content-Type", "text/plain; charset=utf-8"},
	{"Content-Transfer-Encoding", "8bit"},
	{"X-Mailer", "Thunderbird"},
	{"Authentication-Results", "mx.example.com; spf=pass smtp.mailfrom=example.org"},
}

// oneMessage plays the MTA for one SMTP session with one message, as
// Postfix does for most inbound mail: negotiate, connect, MAIL, RCPT,
// headers, end of message, quit.
func oneMessage(c *gomilter.Client) error {
	s, err := c.Session()
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Macros(gomilter.CodeConn, "j", "mx.example.com", "{daemon_name}", "mx.example.com"); err != nil {
		return err
	}
	if _, err := s.Conn("mx.example.org", gomilter.FamilyInet, 40000, "192.0.2.1"); err != nil {
		return err
	}
	if err := s.Macros(gomilter.CodeMail, "{daemon_name}", "mx.example.com", "{client_addr}", "192.0.2.1"); err != nil {
		return err
	}
	if _, err := s.Mail("<alice@example.org>", nil); err != nil {
		return err
	}
	if _, err := s.Rcpt("<bob@example.com>", nil); err != nil {
		return err
	}
	for _, h := range benchHeader {
		if _, err := s.HeaderField(h[0], h[1]); err != nil {
			return err
		}
	}
	if err := s.Macros(gomilter.CodeEOB, "i", "4XyZ1"); err != nil {
		return err
	}
	_, act, err := s.End()
	if err != nil {
		return err
	}
	if act.Code != gomilter.ActAccept {
		return fmt.Errorf("action %c", act.Code)
	}
	return nil
}

// BenchmarkRoundTrip measures one message per session, go-milter Client to
// server over loopback, for replygate and for the null go-milter server
// in the same run, at 1 and 16 concurrent sessions. ns/op is the time per
// message; the client shares the CPU with the server.
func BenchmarkRoundTrip(b *testing.B) {
	for _, network := range []string{"tcp", "unix"} {
		for _, impl := range []string{"null", "replygate"} {
			for _, conc := range []int{1, 16} {
				b.Run(fmt.Sprintf("%s/%s/c%d", network, impl, conc), func(b *testing.B) {
					benchRoundTrip(b, network, impl, conc)
				})
			}
		}
	}
}

func benchRoundTrip(b *testing.B, network, impl string, conc int) {
	var ln net.Listener
	var err error
	if network == "unix" {
		ln, err = net.Listen("unix", filepath.Join(b.TempDir(), "m.sock"))
	} else {
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
	}
	if err != nil {
		b.Fatal(err)
	}
	switch impl {
	case "null":
		srv := &gomilter.Server{NewMilter: func() gomilter.Milter { return nullMilter{} }, Actions: actions, Protocol: protocol}
		go srv.Serve(ln)
		defer srv.Close()
	default:
		p, err := policy.New(policy.DefaultConfig())
		if err != nil {
			b.Fatal(err)
		}
		srv := New(p, Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
		go srv.Serve(ln)
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
		}()
	}
	c := gomilter.NewClientWithOptions(ln.Addr().Network(), ln.Addr().String(), gomilter.ClientOptions{
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, ActionMask: gomilter.OptAddHeader})
	if err := oneMessage(c); err != nil { // warm up, and check it works
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	if conc == 1 {
		for b.Loop() {
			if err := oneMessage(c); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.SetParallelism(conc / max(1, runtimeProcs()))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := oneMessage(c); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
