package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/replygate/replygate/milter"
	"github.com/replygate/replygate/policy"
	"github.com/replygate/replygate/vacation"
	"github.com/replygate/replygate/vacation/api"
	"github.com/replygate/replygate/vacation/compose"
	"github.com/replygate/replygate/vacation/dkimsign"
	"github.com/replygate/replygate/vacation/store"
)

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "config file (TOML); flags override it")
	milterSpec := fs.String("milter", "", "milter listen spec: inet:HOST:PORT, inet6:[HOST]:PORT or unix:/path")
	apiAddr := fs.String("api", "", "API listen address HOST:PORT")
	stateDir := fs.String("state", "", "state directory")
	relay := fs.String("relay", "", "SMTP relay for replies, HOST:PORT")
	pos, err := parseFlags(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		return err
	}
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", pos[0])}
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	for _, o := range []struct {
		flag string
		dst  *string
	}{{*milterSpec, &cfg.Milter.Listen}, {*apiAddr, &cfg.API.Listen}, {*stateDir, &cfg.StateDir}, {*relay, &cfg.Relay}} {
		if o.flag != "" {
			*o.dst = o.flag
		}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	state, err := cfg.ResolveStateDir()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if err := checkStateDir(state); err != nil {
		return err
	}

	logger := slog.New(slog.NewJSONHandler(stderr, nil))
	// go-milter reports protocol errors through the standard logger.
	log.SetFlags(0)
	log.SetOutput(logWriter{logger})

	p, err := policy.New(cfg.Policy)
	if err != nil {
		return err
	}
	// Everything that can fail is set up before the listeners open, so a
	// failed start leaves no socket behind.
	// PostgreSQL that does not answer does not stop the start: see
	// openServeStore.
	st, pg, storeUp, err := openServeStore(cfg.Store, state, logger)
	if err != nil {
		return err
	}
	defer st.Close()
	credit := vacation.NewCredit(cfg.Vacation.UserCredit, cfg.Vacation.CreditPool, time.Minute)
	outbox := vacation.NewOutbox(st, vacation.OutboxConfig{
		Credit:    credit,
		Relay:     cfg.Relay,
		Helo:      cfg.Vacation.Hostname,
		Sessions:  cfg.Vacation.RelaySessions,
		MaxQueued: cfg.Vacation.MaxOutbox,
		Lease:     time.Duration(cfg.Vacation.OutboxLease),
	}, logger, time.Now)
	if err := outbox.Load(context.Background()); err != nil && storeUp {
		return fmt.Errorf("read the outbox: %w", err)
	} // with the store down, the outbox's Run loads it when it answers
	vcfg := vacation.Config{
		Hostname:          cfg.Vacation.Hostname,
		EnvelopeFromUser:  cfg.Vacation.EnvelopeFromUser,
		TrustedAuthservID: cfg.Vacation.TrustedAuthservID,
		Credit:            credit,
	}
	if cfg.Vacation.DKIMKey != "" {
		if vcfg.Signer, err = dkimsign.Load(cfg.Vacation.DKIMKey, cfg.Vacation.DKIMDomain, cfg.Vacation.DKIMSelector); err != nil {
			return fmt.Errorf("vacation.dkim_key: %w", err)
		}
	}
	responder := vacation.NewResponder(st, vcfg, logger, time.Now, outbox)
	lk := lookups{kick: make(chan struct{}, 1)}
	if err := lk.load(context.Background(), st); err != nil && storeUp {
		return fmt.Errorf("load aliases and stamping preferences: %w", err)
	} // with the store down, lk.run loads them when it answers

	spec, _ := milter.ParseSpec(cfg.Milter.Listen) // validated above
	mode, _ := cfg.SocketMode()
	mln, err := milter.Listen(spec, mode)
	if err != nil {
		return fmt.Errorf("milter.listen %s: %w", spec, err)
	}
	if spec.Network == "unix" {
		defer os.Remove(spec.Address)
	}
	apiAuth, err := apiConfig(cfg)
	if err != nil {
		mln.Close()
		return err
	}
	aln, err := listenAPI(cfg, state)
	if err != nil {
		mln.Close()
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	mcfg := cfg.MilterConfig()
	mcfg.Aliases, mcfg.OptIn = lk.Aliases, lk.OptIn
	filter := milter.New(p, mcfg, logger, offerFunc(func(ctx context.Context, m milter.Inbound) error {
		err := responder.Offer(ctx, toVacation(m))
		// A full outbox, a store slower than offer_timeout, or one that
		// is down: the milter answers with its fail action. With
		// tempfail the MTA brings the message back and the reply is not
		// lost; with accept (the default) the message flows on without a
		// reply, logged and counted.
		switch {
		case errors.Is(err, vacation.ErrOutboxFull) || errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("%w: %w", milter.ErrOverload, err)
		case err != nil && store.Unreachable(err):
			return fmt.Errorf("%w: store unreachable: %w", milter.ErrOverload, err)
		}
		return err
	}))
	var milterUp atomic.Bool
	milterUp.Store(true)
	reg := newRegistry(filter.Metrics(), responder, outbox, credit)
	apiAuth.Registerer, apiAuth.Gatherer = reg, reg
	apiAuth.Changed = lk.changed
	apiAuth.Health = map[string]func(context.Context) error{
		"store": func(ctx context.Context) error { _, err := st.OutboxLen(ctx); return err },
		"milter": func(context.Context) error {
			if !milterUp.Load() {
				return errors.New("listener closed")
			}
			return nil
		},
	}
	errc := make(chan error, 3)
	go func() { err := filter.Serve(mln); milterUp.Store(false); errc <- err }()
	aln.serve(api.New(st, apiAuth, logger, time.Now).Handler(), logger, errc)
	bgCtx, stopBackground := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Go(func() { outbox.Run(bgCtx) })
	bg.Go(func() { lk.run(bgCtx, st, logger) })
	if pg != nil {
		bg.Go(func() { watchStore(bgCtx, pg, storeUp, logger) })
	}
	logger.Info("ready", "milter", spec.String(), "api", aln.addr(), "socket", aln.socket, "state", state, "relay", cfg.Relay, "version", version)
	notifySystemd("READY=1")

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc: // a listener failed for good
		logger.Error("listener failed", "err", runErr)
	}
	stop() // a second signal now kills the process
	notifySystemd("STOPPING=1")
	logger.Info("shutting down", "timeout", time.Duration(cfg.ShutdownTimeout).String())
	sctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.ShutdownTimeout))
	defer cancel()
	apiDone := make(chan error, 1)
	go func() { apiDone <- aln.shutdown(sctx) }()
	err = errors.Join(filter.Shutdown(sctx), <-apiDone)
	// Queued replies are durable: the outbox only finishes its sends in
	// progress, and whatever is left goes out after the restart.
	stopBackground()
	bg.Wait()
	if errors.Is(err, context.DeadlineExceeded) {
		// Sessions still open at the deadline were closed; their MTA
		// applies its milter_default_action. That is the drain working.
		logger.Warn("shutdown deadline reached, closed the remaining sessions")
		err = nil
	}
	logger.Info("stopped", "messages", filter.Metrics().Messages.Load())
	return errors.Join(runErr, err)
}

// logWriter turns standard-library log lines into slog warnings.
type logWriter struct{ l *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.l.Warn(string(bytes.TrimSpace(p)), "source", "go-milter")
	return len(p), nil
}

// notifySystemd tells systemd (Type=notify) about readiness; without
// $NOTIFY_SOCKET it does nothing.
func notifySystemd(state string) {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return
	}
	if sock[0] == '@' {
		sock = "\x00" + sock[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(state))
}

// offerFunc adapts a function to milter.Responder.
type offerFunc func(ctx context.Context, m milter.Inbound) error

func (f offerFunc) Offer(ctx context.Context, m milter.Inbound) error { return f(ctx, m) }

// toVacation converts what the milter hands over into what the responder
// takes; the two packages do not know each other.
func toVacation(m milter.Inbound) vacation.Message {
	h := make([]compose.Field, len(m.Header.Fields))
	for i, f := range m.Header.Fields {
		h[i] = compose.Field{Name: f.Name, Value: f.Value}
	}
	return vacation.Message{QueueID: m.QueueID, MailFrom: m.MailFrom, Rcpts: m.Rcpts, Header: h}
}
