package milter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/replygate/replygate/policy"
)

// session is one MTA connection and the message in flight on it. It is
// also the go-milter backend: NewMilter hands out this same object after
// every message, so connection data (client, daemon name, login) outlives
// go-milter's backend swap, and per-message state is reset at MAIL FROM.
//
// Every callback whose reply was negotiated away returns nil: go-milter
// v0.5.0 writes any non-nil response, and a stray reply desynchronises
// the stream so that the MTA takes it as the end-of-message answer and
// drops our header without a warning (../shared/recipes/postfix.md,
// go-milter finding 1). go-milter itself still answers a DATA command
// and a malformed header or connect packet whatever was negotiated; a
// conforming MTA sends none of these (DATA is negotiated away).
type session struct {
	srv *Server
	log *slog.Logger // per connection, with "conn"

	// Connection data, kept across messages.
	client    netip.Addr
	localConn bool // the MTA's emulated connection for local submission
	daemon    string
	auth      string

	// The message in flight.
	inMessage atomic.Bool
	queueID   string
	mlog      *slog.Logger // log with queue_id once known
	mailFrom  string
	rcpts     []policy.Recipient
	header    policy.Header
	started   time.Time
}

// maxRcpts bounds the recipients kept per message, as Postfix's
// smtpd_recipient_limit does by default.
const maxRcpts = 1000

func (s *session) draining() bool { return s.srv.closing.Load() && !s.inMessage.Load() }

// envMacros copies the connection macros of the CONNECT and MAIL stages.
// go-milter replaces the map at every stage, so each callback copies what
// it sees. Later stages are not read for these: Postfix's cleanup sends
// the header and end-of-message macros with its own {daemon_name} (the
// host name, not the submission service's ORIGINATING).
func (s *session) envMacros(m map[string]string) {
	if v := m["{daemon_name}"]; v != "" {
		s.daemon = v
	}
	if v := m["{client_addr}"]; v != "" {
		if ip, err := netip.ParseAddr(v); err == nil {
			s.client = ip.Unmap()
		}
	}
	if v, ok := m["{auth_authen}"]; ok {
		s.auth = v
	}
}

// queueMacro notes the queue id. Postfix has it at end of message (and at
// MAIL for local submissions), Sendmail at MAIL and, as replygate asks,
// at end of message; the end-of-message value wins, since an earlier one
// may be left over from the previous message when the MTA sent no new
// macro packet.
func (s *session) queueMacro(m map[string]string, final bool) {
	id := m["i"]
	if id == "" || id == s.queueID || s.queueID != "" && !final {
		return
	}
	s.queueID, s.mlog = id, s.log.With("queue_id", id)
}

func (s *session) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (gomilter.Response, error) {
	if ip, ok := netip.AddrFromSlice(addr); ok {
		s.client = ip.Unmap()
	}
	s.localConn = isLocalSubmission(host, family, port, s.client)
	s.envMacros(m.Macros)
	return nil, nil
}

// isLocalSubmission recognises mail from the sendmail command. Postfix's
// cleanup runs non_smtpd_milters with an emulated connection: host
// "localhost", address 127.0.0.1, port 0, which no TCP client can have
// (XCLIENT could fake it, but only for hosts the admin authorised).
// Sendmail run as the MTA with -bs or -bm has no client socket at all,
// and reports the family as unknown.
func isLocalSubmission(host, family string, port uint16, ip netip.Addr) bool {
	if family == "unknown" {
		return true
	}
	return port == 0 && (family == "tcp4" || family == "tcp6") && ip.IsLoopback() && strings.EqualFold(host, "localhost")
}

func (s *session) Helo(string, *gomilter.Modifier) (gomilter.Response, error) { return nil, nil }

func (s *session) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.reset()
	s.inMessage.Store(true)
	s.started = time.Now()
	s.mailFrom = from
	s.auth = "" // MAIL's macro packet brings the login again for each message
	s.envMacros(m.Macros)
	s.queueMacro(m.Macros, false)
	return nil, nil
}

func (s *session) RcptTo(rcpt string, m *gomilter.Modifier) (gomilter.Response, error) {
	if len(s.rcpts) < maxRcpts {
		r := policy.Recipient{Addr: rcpt}
		if s.srv.cfg.Aliases != nil {
			r.Aliases = s.srv.cfg.Aliases(rcpt)
		}
		s.rcpts = append(s.rcpts, r)
	}
	s.queueMacro(m.Macros, false)
	return nil, nil
}

// Header is not called: conn takes header frames before go-milter sees
// them and hands them to headerFrame.
func (s *session) Header(name, value string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.header.Add(name, value)
	return nil, nil
}

// headerFrame adds one header event, "name NUL value NUL". The name ends
// at the first NUL; the value is the rest less its terminator, NUL bytes
// and all, as ReadHeader keeps them for `check`. data is reused after.
func (s *session) headerFrame(data []byte) {
	name, value, _ := bytes.Cut(data, []byte{0})
	value = bytes.TrimSuffix(value, []byte{0})
	s.header.AddBytes(name, value)
}

// headerDropped notes a header field too long to keep.
func (s *session) headerDropped() { s.header.Truncated = true }

func (s *session) Headers(textproto.MIMEHeader, *gomilter.Modifier) (gomilter.Response, error) {
	return nil, nil
}

func (s *session) BodyChunk([]byte, *gomilter.Modifier) (gomilter.Response, error) { return nil, nil }

func (s *session) Abort(*gomilter.Modifier) error {
	s.reset()
	return nil
}

func (s *session) reset() {
	s.inMessage.Store(false)
	s.queueID, s.mlog, s.mailFrom = "", s.log, ""
	clear(s.rcpts)
	s.rcpts = s.rcpts[:0]
	s.header.Reset()
}

// Body is end-of-message, the one event that is answered: judge, add the
// stamp, hand allowed mail to the responder, accept.
func (s *session) Body(m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer s.inMessage.Store(false)
	defer func() {
		if v := recover(); v != nil {
			s.srv.metrics.Errors.Add(1)
			s.mlog.Error("internal error, applying fail action", "err", fmt.Sprint(v), "stack", string(debug.Stack()))
			resp, err = s.srv.failResponse(), nil
		}
	}()
	s.queueMacro(m.Macros, true)
	in := policy.Input{Envelope: s.envelope(), Header: s.header}
	v := s.srv.policy.Classify(in)

	for _, f := range v.AddHeaders() {
		if err := m.AddHeader(f.Name, f.Value); err != nil {
			return nil, err // the MTA is gone; it applies its default action
		}
	}
	if s.srv.cfg.TraceHeader {
		if err := m.AddHeader(TraceHeader, traceValue(v)); err != nil {
			return nil, err
		}
	}
	s.srv.metrics.count(v)
	s.mlog.Info("verdict",
		"direction", direction(v.Outbound),
		"mail_from", s.mailFrom,
		"rcpts", len(s.rcpts),
		"auto_reply", v.AutoReply,
		"reasons", v.Reasons.Strings(),
		"stamp", v.Stamp,
		"stamp_reasons", v.StampReasons.Strings(),
		"ms", float64(time.Since(s.started).Microseconds())/1000)

	if r := s.srv.responder; r != nil && hasAllowed(v) {
		ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.OfferTimeout)
		err := r.Offer(ctx, s.inbound(v))
		cancel()
		switch {
		case errors.Is(err, ErrOverload):
			// The responder cannot take it now: with tempfail the MTA
			// keeps the message and brings it back, so load queues at
			// the edge; with accept the reply is lost and counted.
			s.srv.metrics.Overloads.Add(1)
			s.mlog.Warn("responder overloaded, applying fail action", "err", err, "action", string(s.srv.cfg.FailAction))
			return s.srv.failResponse(), nil
		case err != nil:
			s.srv.metrics.Errors.Add(1)
			s.mlog.Warn("responder refused message", "err", err)
		}
	}
	return gomilter.RespAccept, nil
}

func (s *session) envelope() policy.Envelope {
	optIn := s.srv.cfg.OptIn != nil && s.mailFrom != "" && s.srv.cfg.OptIn(s.mailFrom)
	return policy.Envelope{
		OptIn:    optIn,
		MailFrom: s.mailFrom,
		Rcpts:    s.rcpts,
		Auth:     s.auth,
		ClientIP: s.client,
		Daemon:   s.daemon,
		Local:    s.localConn,
	}
}

// inbound copies what the responder may keep: the session's buffers are
// reused by the next message.
func (s *session) inbound(v policy.Verdict) Inbound {
	in := Inbound{QueueID: s.queueID, MailFrom: s.mailFrom, Verdict: v}
	for _, r := range v.Recipients {
		if r.AutoReply == policy.Allow {
			in.Rcpts = append(in.Rcpts, r.Rcpt)
		}
	}
	in.Header = policy.Header{Fields: append([]policy.Field(nil), s.header.Fields...)}
	return in
}

func hasAllowed(v policy.Verdict) bool {
	for _, r := range v.Recipients {
		if r.AutoReply == policy.Allow {
			return true
		}
	}
	return false
}

func direction(outbound bool) string {
	if outbound {
		return "outbound"
	}
	return "inbound"
}

// TraceHeader is added to every message when the config asks for it, so
// a test or an admin can read the verdict off delivered mail.
const TraceHeader = "X-Replygate-Verdict"

func traceValue(v policy.Verdict) string {
	var b strings.Builder
	b.WriteString(string(v.AutoReply))
	if v.Reasons != 0 {
		b.WriteString("; reasons=")
		b.WriteString(strings.Join(v.Reasons.Strings(), ","))
	}
	fmt.Fprintf(&b, "; direction=%s; stamp=%t", direction(v.Outbound), v.Stamp)
	return b.String()
}
