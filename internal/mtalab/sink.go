package mtalab

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/textproto"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Message is one message the sink accepted: the envelope and the data
// exactly as received (CRLF line ends, no dot-stuffing).
type Message struct {
	From string   // envelope sender; "" for the null sender
	To   []string // accepted recipients
	Data []byte
	At   time.Time
}

// Header parses the message's header section.
func (m Message) Header() textproto.MIMEHeader {
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(m.Data))).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return textproto.MIMEHeader{}
	}
	return h
}

// Get returns the first value of a header field, "" when absent.
func (m Message) Get(name string) string { return m.Header().Get(name) }

// Values returns every value of a header field.
func (m Message) Values(name string) []string {
	return m.Header().Values(name)
}

// queueIDRe matches the queue id in the Received field Postfix adds:
// "... with ESMTP id 4XyZ1234; ..." (smtpd) or "... (Postfix, from userid 0)
// id 4XyZ1234; ..." (pickup).
var queueIDRe = regexp.MustCompile(`(?:\(Postfix(?:, from userid \d+)?\)|with E?SMTPS?A?) +id ([0-9A-Za-z]+)`)

// QueueID returns the queue id the Postfix instance assigned to the
// message, read from the topmost Received field (the sink adds none).
func (m Message) QueueID() string {
	rs := m.Values("Received")
	if len(rs) == 0 {
		return ""
	}
	if sm := queueIDRe.FindStringSubmatch(rs[0]); sm != nil {
		return sm[1]
	}
	return ""
}

// Sink is an SMTP server that records every message it accepts. A
// recipient whose local part is a reply code fails on demand: 451@… is
// refused with a temporary error, 550@… with a permanent one. Hold
// makes it stall, as a relay that stopped answering does.
type Sink struct {
	srv  *smtp.Server
	addr string

	mu      sync.Mutex
	msgs    []Message
	hold    chan struct{} // non-nil while held; closed by Release
	held    []string      // recipients whose RCPT was held
	changed chan struct{} // closed and replaced on each new message or held recipient
}

// NewSink starts a sink on a free loopback port; it is closed when the
// test ends.
func NewSink(t testing.TB) *Sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("sink: listen: %v", err)
	}
	s := &Sink{addr: ln.Addr().String(), changed: make(chan struct{})}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &sinkSession{sink: s}, nil
	}))
	s.srv.Domain = "sink.example"
	s.srv.MaxMessageBytes = 32 << 20
	s.srv.MaxRecipients = 1000
	s.srv.ReadTimeout = time.Minute
	s.srv.WriteTimeout = time.Minute
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		s.Release()
		s.srv.Close()
		<-done
	})
	return s
}

// Hold makes the sink stall: from now on every RCPT command waits, with
// no answer, until Release, so the client's message is in flight and
// undelivered for as long as the test wants (or until the client gives
// up or dies). Held lists the recipients held so far.
func (s *Sink) Hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold == nil {
		s.hold = make(chan struct{})
	}
}

// Release ends a Hold: the waiting RCPT commands are refused with a
// temporary error (their client must try again, as after any stall),
// and later ones are served as usual.
func (s *Sink) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
}

// Held returns the recipients whose RCPT was held, in order.
func (s *Sink) Held() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.held...)
}

// WaitHeld waits until at least n recipients have been held, and
// returns them.
func (s *Sink) WaitHeld(t testing.TB, n int, timeout time.Duration) []string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		held, changed := append([]string(nil), s.held...), s.changed
		s.mu.Unlock()
		if len(held) >= n {
			return held
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("sink: %d recipient(s) held within %v, want %d: %v", len(held), timeout, n, held)
			return nil
		}
	}
}

// holding records rcpt as held and returns the channel to wait on, or
// nil when the sink is not held.
func (s *Sink) holding(rcpt string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold == nil {
		return nil
	}
	s.held = append(s.held, rcpt)
	close(s.changed)
	s.changed = make(chan struct{})
	return s.hold
}

// Addr is the sink's host:port.
func (s *Sink) Addr() string { return s.addr }

// Messages returns a copy of what has been received so far.
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// WaitFor waits until ok returns true for the messages received so far,
// and returns them. It fails the test at the deadline, listing what came.
func (s *Sink) WaitFor(t testing.TB, timeout time.Duration, what string, ok func([]Message) bool) []Message {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		msgs, changed := append([]Message(nil), s.msgs...), s.changed
		s.mu.Unlock()
		if ok(msgs) {
			return msgs
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("sink: %s: not seen within %v; %d message(s) arrived: %s", what, timeout, len(msgs), summary(msgs))
			return nil
		}
	}
}

// WaitN waits until at least n messages have arrived.
func (s *Sink) WaitN(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	return s.WaitFor(t, timeout, fmt.Sprintf("%d message(s)", n), func(m []Message) bool { return len(m) >= n })
}

// WaitMessageID waits for the message whose Message-ID field is id.
func (s *Sink) WaitMessageID(t testing.TB, id string, timeout time.Duration) Message {
	t.Helper()
	var found Message
	s.WaitFor(t, timeout, "Message-ID "+id, func(msgs []Message) bool {
		for _, m := range msgs {
			if m.Get("Message-Id") == id {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

func summary(msgs []Message) string {
	var b strings.Builder
	for i, m := range msgs {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "<%s> -> %v id=%s", m.From, m.To, m.Get("Message-Id"))
	}
	return b.String()
}

func (s *Sink) add(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	close(s.changed)
	s.changed = make(chan struct{})
}

type sinkSession struct {
	sink *Sink
	from string
	to   []string
}

func (ss *sinkSession) Reset()        { ss.from, ss.to = "", nil }
func (ss *sinkSession) Logout() error { return nil }

func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.from = from
	return nil
}

// Rcpt fails on demand: the local part 451 or 550 picks the error. While
// the sink is held it waits for Release, then refuses for now.
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if release := ss.sink.holding(to); release != nil {
		<-release
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "sink: released after a hold"}
	}
	local, _, _ := strings.Cut(to, "@")
	switch local {
	case "451":
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "sink: temporary failure on demand"}
	case "550":
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "sink: permanent failure on demand"}
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if len(ss.to) == 0 {
		return errors.New("no valid recipients")
	}
	ss.sink.add(Message{From: ss.from, To: append([]string(nil), ss.to...), Data: data, At: time.Now()})
	return nil
}
