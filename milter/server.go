package milter

import (
	"context"
	"errors"
	"log/slog"
	"math/bits"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/replygate/replygate/policy"
)

// Inbound is a message the gate allows an automatic reply to, as handed
// to the responder.
type Inbound struct {
	QueueID  string
	MailFrom string
	Rcpts    []string // the recipients replies are allowed for
	Header   policy.Header
	Verdict  policy.Verdict
}

// Responder is all the milter needs from the vacation responder. Offer
// must not block on SMTP or a slow store: the MTA is waiting for the
// end-of-message answer. An error is logged and counted; the message is
// accepted all the same.
type Responder interface {
	Offer(ctx context.Context, m Inbound) error
}

// ErrOverload is returned (wrapped) by a Responder that cannot take a
// message now, such as when its outbox is full. The milter then answers
// with the fail action instead of accept.
var ErrOverload = errors.New("responder overloaded")

// FailAction is what the MTA is told when replygate cannot judge a
// message: overload, an internal error.
type FailAction string

const (
	FailAccept   FailAction = "accept"
	FailTempfail FailAction = "tempfail"
)

// Config holds the milter's knobs; the zero value of each is its default.
type Config struct {
	MaxSessions int           // live MTA connections; default 1000
	IdleTimeout time.Duration // a read or write that takes longer ends the session; default 10m
	FailAction  FailAction    // default accept
	TraceHeader bool          // add X-Replygate-Verdict to every message
	Limits      policy.Limits // header bounds per message
	// OfferTimeout bounds Responder.Offer: the MTA waits for the
	// end-of-message answer. Default 1s.
	OfferTimeout time.Duration
	// Aliases returns the other addresses that name rcpt in To/Cc (its
	// vacation aliases), for the RFC 5230 section 4.5 rule. It runs while
	// the MTA waits, so it must answer from memory; nil means none.
	Aliases func(rcpt string) []string
	// OptIn reports whether a sender asked for all their outbound mail to
	// be stamped. It runs while the MTA waits, so it must answer from
	// memory; nil means nobody did (the config's opt_in_senders still apply).
	OptIn func(sender string) bool
}

func (c Config) withDefaults() Config {
	if c.MaxSessions <= 0 {
		c.MaxSessions = 1000
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 10 * time.Minute
	}
	if c.FailAction == "" {
		c.FailAction = FailAccept
	}
	if c.OfferTimeout <= 0 {
		c.OfferTimeout = time.Second
	}
	return c
}

// Negotiation, as the lean go-milter measured fastest with Postfix: the
// envelope and header events are sent without replies, HELO, DATA, EOH,
// body and unknown commands not at all, and only end-of-message is
// answered (../shared/recipes/postfix.md). SETSYMLIST asks for the
// connection macros at MAIL FROM of every message, so each message of a
// session carries its own client, daemon name and login
// (../shared/recipes/postfix-macros.md); the EOH list is there because
// Sendmail 8.17 uses a milter's EOM list only if it also sent an EOH list.
const (
	actions  = gomilter.OptAddHeader | gomilter.OptSetSymList
	protocol = gomilter.OptNoConnReply | gomilter.OptNoHelo | gomilter.OptNoMailReply |
		gomilter.OptNoRcptReply | gomilter.OptNoHeaderReply | gomilter.OptNoEOH |
		gomilter.OptNoBody | gomilter.OptNoData | gomilter.OptNoUnknown
)

var symList = map[gomilter.Stage][]string{
	gomilter.StageMailFrom: {"i", "{daemon_name}", "{client_addr}", "{auth_authen}"},
	gomilter.StageEOH:      {"i"},
	gomilter.StageEOM:      {"i"},
}

// Server serves the milter protocol on any number of listeners.
type Server struct {
	policy    *policy.Policy
	responder Responder
	log       *slog.Logger
	cfg       Config
	metrics   Metrics

	sessions chan struct{} // one token per live session
	overload chan struct{} // one token per overload answer in progress
	closing  atomic.Bool
	connID   atomic.Uint64

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	wg        sync.WaitGroup
}

// New returns a server judging with p. responder may be nil.
func New(p *policy.Policy, cfg Config, log *slog.Logger, responder Responder) *Server {
	cfg = cfg.withDefaults()
	return &Server{
		policy:    p,
		responder: responder,
		log:       log,
		cfg:       cfg,
		sessions:  make(chan struct{}, cfg.MaxSessions),
		overload:  make(chan struct{}, cfg.MaxSessions/10+16),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
	}
}

// Metrics returns the server's counters.
func (s *Server) Metrics() *Metrics { return &s.metrics }

// Serve accepts connections on ln until Shutdown. Temporary accept errors
// (EMFILE, ECONNABORTED) are retried with backoff: go-milter's own Serve
// would return on the first one and leave the MTA without its milter.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return gomilter.ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return gomilter.ErrServerClosed
			}
			if temporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed, retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.dispatch(c)
	}
}

// temporary reports whether an accept error passes: out of file
// descriptors or memory, or a client that hung up before accept.
func temporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EINTR)
}

// dispatch starts a session for c, or answers it per the fail action when
// the session limit is reached.
func (s *Server) dispatch(c net.Conn) {
	select {
	case s.sessions <- struct{}{}:
		id := s.connID.Add(1)
		if !s.goTracked(func() { defer func() { <-s.sessions }(); s.serveConn(c, id) }) {
			<-s.sessions
			c.Close()
		}
		return
	default:
	}
	s.metrics.Overloads.Add(1)
	select {
	case s.overload <- struct{}{}:
		if !s.goTracked(func() { defer func() { <-s.overload }(); answerOverload(c, s.cfg.FailAction, s.log) }) {
			<-s.overload
			c.Close()
		}
	default:
		c.Close() // even the overload answers are saturated: the MTA's default applies
	}
}

// goTracked runs f in a goroutine that Shutdown waits for, unless Shutdown
// has begun. The check and the Add share the lock that Shutdown takes to
// set closing, so no Add can race with Shutdown's Wait.
func (s *Server) goTracked(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.wg.Go(f)
	return true
}

func (s *Server) serveConn(nc net.Conn, id uint64) {
	log := s.log.With("conn", strconv.FormatUint(id, 10))
	sess := &session{srv: s, log: log, mlog: log, header: policy.NewHeader(s.cfg.Limits)}
	c := newConn(nc, s.cfg.IdleTimeout)
	c.sess = sess
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.metrics.Sessions.Add(1)
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.metrics.Sessions.Add(-1)
	}()
	ms := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return sess },
		Actions:   actions,
		Protocol:  protocol,
		SymList:   symList,
	}
	ms.Serve(&oneConn{c: c}) // returns once go-milter's session closed c
}

// Shutdown stops accepting, lets every message in flight reach its end,
// closes sessions that are between messages, and at ctx's deadline
// closes the rest.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	var errs []error
	for ln := range s.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for c := range s.conns {
		c.Conn.SetReadDeadline(time.Now()) // wake idle readers; see netReader
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}

func (s *Server) failResponse() gomilter.Response {
	if s.cfg.FailAction == FailTempfail {
		return gomilter.RespTempFail
	}
	return gomilter.RespAccept
}

// Metrics counts what the milter did. Sessions is a gauge.
type Metrics struct {
	Sessions   atomic.Int64
	Messages   atomic.Uint64
	Allowed    atomic.Uint64
	Suppressed atomic.Uint64
	Stamped    atomic.Uint64
	Errors     atomic.Uint64
	Overloads  atomic.Uint64
	// Reasons counts verdicts by reason (why a reply was suppressed),
	// StampReasons stamps by reason; both are indexed as
	// policy.KnownReasons lists the reasons.
	Reasons, StampReasons [32]atomic.Uint64
}

func (m *Metrics) count(v policy.Verdict) {
	m.Messages.Add(1)
	if v.AutoReply == policy.Allow {
		m.Allowed.Add(1)
	} else {
		m.Suppressed.Add(1)
	}
	if v.Stamp {
		m.Stamped.Add(1)
	}
	for s := uint32(v.Reasons); s != 0; s &= s - 1 {
		m.Reasons[bits.TrailingZeros32(s)].Add(1)
	}
	for s := uint32(v.StampReasons); s != 0; s &= s - 1 {
		m.StampReasons[bits.TrailingZeros32(s)].Add(1)
	}
}
