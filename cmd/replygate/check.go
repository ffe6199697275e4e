package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/replygate/replygate/policy"
)

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// optString is a flag that knows whether it was given: --mail-from ”
// is the null sender, no --mail-from at all is "unknown".
type optString struct {
	v   string
	set bool
}

func (o *optString) String() string     { return o.v }
func (o *optString) Set(v string) error { o.v, o.set = v, true; return nil }

// check classifies one message exactly as the milter would: the same
// header reader and limits, the same Policy.Classify, no side effect.
func check(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the verdict as JSON")
	outbound := fs.Bool("outbound", false, "judge as outbound mail (for stamping)")
	var mailFrom optString
	fs.Var(&mailFrom, "mail-from", "envelope sender; '' or '<>' is the null sender (default: the Return-Path field)")
	var rcpts, aliases stringList
	fs.Var(&rcpts, "rcpt", "envelope recipient (repeatable)")
	fs.Var(&aliases, "alias", "RCPT=ALIAS: ALIAS also names RCPT in To/Cc (repeatable)")
	auth := fs.String("auth", "", "SASL login name")
	clientIP := fs.String("client-ip", "", "client address")
	daemon := fs.String("daemon", "", "MTA daemon name, e.g. ORIGINATING")
	local := fs.Bool("local", false, "locally submitted (sendmail command)")
	cfgPath := fs.String("config", "", "config file (TOML)")
	fs.Usage = func() {}
	pos, err := parseFlags(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, "Usage: replygate check [flags] [FILE|-]")
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return err
	}
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usageError{fmt.Errorf("one message at a time, got %d files", len(pos))}
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	p, err := policy.New(cfg.Policy)
	if err != nil {
		return err
	}

	env := policy.Envelope{Auth: *auth, Daemon: *daemon, Local: *local, Outbound: *outbound}
	if *clientIP != "" {
		ip, err := netip.ParseAddr(*clientIP)
		if err != nil {
			return usageError{fmt.Errorf("--client-ip: %q is not an IP address", *clientIP)}
		}
		env.ClientIP = ip.Unmap()
	}
	for _, r := range rcpts {
		env.Rcpts = append(env.Rcpts, policy.Recipient{Addr: trimAngle(r)})
	}
	for _, a := range aliases {
		rcpt, alias, ok := strings.Cut(a, "=")
		i := indexRcpt(env.Rcpts, trimAngle(rcpt))
		if !ok || i < 0 || alias == "" {
			return usageError{fmt.Errorf("--alias %q: want RCPT=ALIAS with RCPT given by --rcpt", a)}
		}
		env.Rcpts[i].Aliases = append(env.Rcpts[i].Aliases, trimAngle(alias))
	}

	in := stdin
	name := "stdin"
	if len(pos) == 1 && pos[0] != "-" {
		f, err := os.Open(pos[0])
		if err != nil {
			return err
		}
		defer f.Close()
		in, name = f, pos[0]
	}
	h, err := policy.ReadHeader(in, cfg.Limits())
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	switch {
	case mailFrom.set:
		env.MailFrom = trimAngle(mailFrom.v)
	case h.Has("Return-Path"):
		env.MailFrom = trimAngle(h.Get("Return-Path"))
	default:
		env.SenderUnknown = true
	}

	v := p.Classify(policy.Input{Envelope: env, Header: h})
	if *asJSON {
		b, err := policy.MarshalVerdict(v)
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	}
	printVerdict(stdout, v)
	return nil
}

func printVerdict(w io.Writer, v policy.Verdict) {
	fmt.Fprintf(w, "auto_reply: %s", v.AutoReply)
	if v.Reasons != 0 {
		fmt.Fprintf(w, " (%s)", strings.Join(v.Reasons.Strings(), ", "))
	}
	fmt.Fprintln(w)
	for _, r := range v.Recipients {
		fmt.Fprintf(w, "  rcpt %s: %s", r.Rcpt, r.AutoReply)
		if r.Reasons != 0 {
			fmt.Fprintf(w, " (%s)", strings.Join(r.Reasons.Strings(), ", "))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "direction: %s\n", map[bool]string{true: "outbound", false: "inbound"}[v.Outbound])
	fmt.Fprintf(w, "stamp: %t", v.Stamp)
	if v.Stamp {
		fmt.Fprintf(w, " (%s)", strings.Join(v.StampReasons.Strings(), ", "))
	}
	fmt.Fprintln(w)
	for _, f := range v.AddHeaders() {
		fmt.Fprintf(w, "  add %s: %s\n", f.Name, f.Value)
	}
}

func trimAngle(s string) string {
	s = strings.TrimSpace(s)
	return strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
}

func indexRcpt(rs []policy.Recipient, addr string) int {
	for i, r := range rs {
		if strings.EqualFold(r.Addr, addr) {
			return i
		}
	}
	return -1
}
