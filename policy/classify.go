package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Decision is the auto-reply verdict.
type Decision string

const (
	Allow    Decision = "allow"
	Suppress Decision = "suppress"
)

// Envelope is what the MTA knows about a message beside its header.
type Envelope struct {
	// MailFrom is the envelope sender without angle brackets; "" is the
	// null sender <>.
	MailFrom string
	// SenderUnknown says MailFrom was not given at all (`check` without
	// --mail-from on a message without Return-Path): the sender rules are
	// skipped rather than guessed.
	SenderUnknown bool
	Rcpts         []Recipient
	Auth          string     // SASL login name, "" when none
	ClientIP      netip.Addr // zero when unknown
	Daemon        string     // MTA daemon name ({daemon_name})
	Local         bool       // submitted locally (sendmail command)
	Outbound      bool       // the caller already knows it is outbound
	OptIn         bool       // the sender asked for all their mail to be stamped
}

// Recipient is an envelope recipient and the other addresses that count
// as naming it in To/Cc (its vacation aliases).
type Recipient struct {
	Addr    string
	Aliases []string
}

// Input is one message to judge.
type Input struct {
	Envelope Envelope
	Header   Header
}

// RecipientVerdict is the auto-reply verdict for one recipient: the
// message's reasons plus whether this recipient was addressed.
type RecipientVerdict struct {
	Rcpt      string    `json:"rcpt"`
	AutoReply Decision  `json:"auto_reply"`
	Reasons   ReasonSet `json:"reasons"`
}

// Verdict is the classifier's answer.
type Verdict struct {
	// AutoReply is Allow exactly when Reasons is empty.
	AutoReply Decision
	// Reasons are why replies are suppressed. not-addressed is in it only
	// when no recipient was addressed; Recipients has the detail.
	Reasons    ReasonSet
	Recipients []RecipientVerdict
	// Outbound says the message was judged for stamping.
	Outbound bool
	// Stamp says the message is outbound machine mail; StampReasons why.
	Stamp        bool
	StampReasons ReasonSet
	add          addSet
}

type addSet uint8

const (
	addAllowAutoReply addSet = 1 << iota
	addAutoSubmitted
	addSuppress
)

// AddHeaders returns the fields to add to the message: the stamp, less
// any field the message already has (a field is never added twice).
func (v Verdict) AddHeaders() []Field {
	out := make([]Field, 0, 3)
	if v.add&addAllowAutoReply != 0 {
		out = append(out, Field{"X-Allow-Auto-Reply", "no"})
	}
	if v.add&addAutoSubmitted != 0 {
		out = append(out, Field{"Auto-Submitted", "auto-generated"})
	}
	if v.add&addSuppress != 0 {
		out = append(out, Field{"X-Auto-Response-Suppress", "All"})
	}
	return out
}

// MarshalJSON writes the verdict as `replygate check --json` prints it
// (the DESIGN.md contract).
func (v Verdict) MarshalJSON() ([]byte, error) {
	type field struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	}
	add := []field{}
	for _, f := range v.AddHeaders() {
		add = append(add, field(f))
	}
	rcpts := v.Recipients
	if rcpts == nil {
		rcpts = []RecipientVerdict{}
	}
	return json.Marshal(struct {
		AutoReply    Decision           `json:"auto_reply"`
		Reasons      ReasonSet          `json:"reasons"`
		Outbound     bool               `json:"outbound"`
		Stamp        bool               `json:"stamp"`
		StampReasons ReasonSet          `json:"stamp_reasons"`
		AddHeaders   []field            `json:"add_headers"`
		Recipients   []RecipientVerdict `json:"recipients"`
	}{v.AutoReply, v.Reasons, v.Outbound, v.Stamp, v.StampReasons, add, rcpts})
}

// Policy is a compiled Config. It is safe for concurrent use.
type Policy struct {
	cfg             Config
	systemSenders   []pattern
	machineSenders  []pattern
	machineLogins   []pattern
	optInSenders    []pattern
	spamFlags       []spamFlag
	productHeaders  []string
	outboundDaemons []string
}

// New compiles c, reporting every invalid entry with its key.
func New(c Config) (*Policy, error) {
	p := &Policy{cfg: c, productHeaders: c.ProductHeaders, outboundDaemons: c.OutboundDaemons}
	var errs []error
	var err error
	if p.systemSenders, err = compilePatterns("policy.system_senders", c.SystemSenders); err != nil {
		errs = append(errs, err)
	}
	if p.machineSenders, err = compilePatterns("policy.machine_senders", c.MachineSenders); err != nil {
		errs = append(errs, err)
	}
	if p.machineLogins, err = compilePatterns("policy.machine_logins", c.MachineLogins); err != nil {
		errs = append(errs, err)
	}
	if p.optInSenders, err = compilePatterns("policy.opt_in_senders", c.OptInSenders); err != nil {
		errs = append(errs, err)
	}
	for _, s := range c.SpamFlags {
		name, prefix, ok := strings.Cut(s, ":")
		name, prefix = strings.TrimSpace(name), strings.TrimSpace(prefix)
		if !ok || name == "" || prefix == "" || !isFieldName([]byte(name)) {
			errs = append(errs, fmt.Errorf("policy.spam_flags: %q is not \"Field: value\"", s))
			continue
		}
		p.spamFlags = append(p.spamFlags, spamFlag{name, prefix})
	}
	for _, h := range c.ProductHeaders {
		if h == "" || !isFieldName([]byte(h)) {
			errs = append(errs, fmt.Errorf("policy.product_headers: %q is not a field name prefix", h))
		}
	}
	if strings.ContainsAny(c.RecipientDelimiter, "@ \t\r\n") {
		errs = append(errs, fmt.Errorf("policy.recipient_delimiter: %q may not hold \"@\" or white space", c.RecipientDelimiter))
	}
	return p, errors.Join(errs...)
}

// Config returns the configuration p was compiled from.
func (p *Policy) Config() Config { return p.cfg }

// scan is what one pass over the header learnt.
type scan struct {
	reasons ReasonSet
	has     addSet // stamp fields already present
}

// Classify judges one message. It is pure: the same input gives the same
// verdict, with no I/O and no clock.
func (p *Policy) Classify(in Input) Verdict {
	env := &in.Envelope
	var v Verdict
	if len(env.Rcpts) > 0 {
		// Not-addressed is the default; the header scan clears it for
		// each recipient it finds named.
		v.Recipients = make([]RecipientVerdict, len(env.Rcpts))
		for i, r := range env.Rcpts {
			v.Recipients[i] = RecipientVerdict{Rcpt: r.Addr, Reasons: bitNotAddressed}
		}
	}
	s := p.scanHeader(&in.Header, env.Rcpts, v.Recipients)
	if in.Header.Truncated {
		s.reasons |= bitHeaderLimit
	}
	if !env.SenderUnknown {
		s.reasons |= p.senderReasons(env.MailFrom)
	}

	v.Reasons = s.reasons
	named := false
	for i := range v.Recipients {
		r := &v.Recipients[i]
		named = named || r.Reasons == 0
		r.Reasons |= s.reasons
		r.AutoReply = decide(r.Reasons)
	}
	if len(v.Recipients) > 0 && !named {
		v.Reasons |= bitNotAddressed
	}
	v.AutoReply = decide(v.Reasons)

	v.Outbound = p.outbound(env)
	if v.Outbound {
		v.StampReasons = s.reasons&machineOrigin | p.machineReasons(env)
		v.Stamp = v.StampReasons != 0
	}
	if v.Stamp {
		v.add = addAllowAutoReply | addAutoSubmitted
		if p.cfg.AddSuppressHeader {
			v.add |= addSuppress
		}
		v.add &^= s.has
	}
	return v
}

func decide(r ReasonSet) Decision {
	if r == 0 {
		return Allow
	}
	return Suppress
}

// outbound applies the direction rules: the connection says the mail
// comes from inside (DESIGN.md, "replygate serve").
func (p *Policy) outbound(env *Envelope) bool {
	if env.Outbound || env.Local || env.Auth != "" {
		return true
	}
	for _, d := range p.outboundDaemons {
		if env.Daemon != "" && strings.EqualFold(env.Daemon, d) {
			return true
		}
	}
	return env.ClientIP.IsValid() && inNets(p.cfg.InternalNetworks, env.ClientIP)
}

func inNets(nets []netip.Prefix, ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, n := range nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// machineReasons are the configured ways of knowing a robot on this site.
func (p *Policy) machineReasons(env *Envelope) ReasonSet {
	var r ReasonSet
	local, _ := splitAddr(env.MailFrom)
	if env.MailFrom != "" && matchAny(p.machineSenders, local, env.MailFrom) {
		r |= bitMachineSender
	}
	if env.Auth != "" && matchAny(p.machineLogins, env.Auth, env.Auth) {
		r |= bitMachineLogin
	}
	if env.ClientIP.IsValid() && inNets(p.cfg.MachineNetworks, env.ClientIP) {
		r |= bitMachineClient
	}
	if env.OptIn || env.MailFrom != "" && matchAny(p.optInSenders, local, env.MailFrom) {
		r |= bitOptIn
	}
	return r
}

func matchAny(ps []pattern, local, addr string) bool {
	for _, pt := range ps {
		if pt.match(local, addr) {
			return true
		}
	}
	return false
}

// senderReasons applies the envelope-sender rules.
func (p *Policy) senderReasons(mailFrom string) ReasonSet {
	// RFC 3834 section 2: never reply to the null sender; the mail is a
	// bounce or another automatic message (RFC 5321 section 4.5.5).
	if mailFrom == "" || mailFrom == "<>" {
		return bitNullSender
	}
	addr := originalSender(mailFrom)
	local, _ := splitAddr(addr)
	// bounces+1234@ is bounces@; but list+bounces-12@ (mlmmj) says what
	// it is only in its detail, so the whole local part is tried too.
	base := stripDetail(local, p.cfg.RecipientDelimiter)
	if isSystemLocal(base) || matchAny(p.systemSenders, base, addr) ||
		base != local && matchAny(p.systemSenders, local, addr) {
		return bitSystemSender
	}
	return 0
}

// isSystemLocal holds the senders RFC 5230 section 4.6 (Sieve vacation)
// and RFC 3834 section 2 name as automated: MAILER-DAEMON, LISTSERV,
// majordomo, owner-* and *-request. postmaster is deliberately absent:
// people read and write postmaster mail.
func isSystemLocal(local string) bool {
	return strings.EqualFold(local, "mailer-daemon") ||
		strings.EqualFold(local, "listserv") ||
		strings.EqualFold(local, "majordomo") ||
		len(local) > len("owner-") && hasPrefixFold(local, "owner-") ||
		len(local) > len("-request") && hasSuffixFold(local, "-request")
}

// scanHeader reads every field once. Each rule names its source.
func (p *Policy) scanHeader(h *Header, rcpts []Recipient, out []RecipientVerdict) scan {
	var s scan
	for i := range h.Fields {
		f := &h.Fields[i]
		name := f.Name
		if name == "" {
			continue
		}
		switch lower(name[0]) {
		case 'x':
			s.reasons |= p.xField(f, &s)
		case 'a':
			// RFC 3834 section 5: any Auto-Submitted other than "no" is
			// automatic. An empty value is not "no".
			if strings.EqualFold(name, "Auto-Submitted") {
				s.has |= addAutoSubmitted
				if !strings.EqualFold(token(f.Value), "no") {
					s.reasons |= bitAutoSubmitted
				}
			}
		case 'l':
			// RFC 2369, RFC 2919, RFC 8058: List-Id, List-Unsubscribe,
			// List-Post, … mark list traffic; answering reaches the list.
			if hasPrefixFold(name, "List-") {
				s.reasons |= bitListHeader
			}
		case 'p':
			// RFC 3834 section 2 and common practice (RFC 2076):
			// Precedence bulk, list and junk are never answered.
			if strings.EqualFold(name, "Precedence") {
				switch t := token(f.Value); {
				case strings.EqualFold(t, "bulk"), strings.EqualFold(t, "list"), strings.EqualFold(t, "junk"):
					s.reasons |= bitPrecedence
				}
			}
		case 'c':
			// RFC 6522: multipart/report carries DSNs (RFC 3464), MDNs
			// (RFC 8098) and abuse reports (RFC 5965).
			if strings.EqualFold(name, "Content-Type") && isReport(f.Value) {
				s.reasons |= bitReport
			}
		case 'f':
			// Feedback-ID is Gmail's feedback loop id for bulk senders.
			if !p.cfg.DisableBulkHeuristic && strings.EqualFold(name, "Feedback-ID") {
				s.reasons |= bitBulkHeuristic
			}
		}
		if len(rcpts) > 0 && isAddressField(name) {
			markAddressed(f.Value, rcpts, out, p.cfg.RecipientDelimiter)
		}
		// Spam filters' verdicts (SpamAssassin's X-Spam-Flag and
		// X-Spam-Status, rspamd's X-Spam): answering spam is backscatter.
		for _, sf := range p.spamFlags {
			if strings.EqualFold(name, sf.name) && hasPrefixFold(fieldText(f.Value), sf.prefix) {
				s.reasons |= bitSpam
			}
		}
	}
	return s
}

// xField applies the rules for X- fields.
func (p *Policy) xField(f *Field, s *scan) ReasonSet {
	name := f.Name
	switch {
	case strings.EqualFold(name, "X-Allow-Auto-Reply"):
		// The opt-out header: "no", in any case, with white space or a
		// comment around it, asks that nothing answer this message.
		s.has |= addAllowAutoReply
		if strings.EqualFold(token(f.Value), "no") {
			return bitXAllowAutoReply
		}
		return 0
	case strings.EqualFold(name, "X-Auto-Response-Suppress"):
		// Microsoft [MS-OXCMAIL] 2.2.3.2.20: a list of OOF, AutoReply,
		// All, DR, NDR, RN, NRN. Only the first three concern replies.
		s.has |= addSuppress
		if suppressesReplies(fieldText(f.Value)) {
			return bitXAutoResponseSuppress
		}
		return 0
	}
	for _, ph := range p.productHeaders {
		if hasPrefixFold(name, ph) {
			return bitProductHeader
		}
	}
	if !p.cfg.DisableBulkHeuristic && isBulkField(name) {
		return bitBulkHeuristic
	}
	return 0
}

// suppressesReplies reads an X-Auto-Response-Suppress list.
func suppressesReplies(v string) bool {
	for v != "" {
		var tok string
		i := strings.IndexAny(v, ", \t;")
		if i < 0 {
			tok, v = v, ""
		} else {
			tok, v = v[:i], v[i+1:]
		}
		if strings.EqualFold(tok, "OOF") || strings.EqualFold(tok, "AutoReply") || strings.EqualFold(tok, "All") {
			return true
		}
	}
	return false
}

// isBulkField knows the fingerprints of bulk mailers: certified-sender
// complaint addresses, campaign ids of mailing services.
func isBulkField(name string) bool {
	return strings.EqualFold(name, "X-CSA-Complaints") ||
		hasPrefixFold(name, "X-Campaign") ||
		strings.EqualFold(name, "X-MC-User") ||
		hasPrefixFold(name, "X-Mailgun-") ||
		strings.EqualFold(name, "X-SES-Outgoing") ||
		strings.EqualFold(name, "X-SG-EID") ||
		strings.EqualFold(name, "X-PM-Message-Id")
}

func isReport(v string) bool {
	v = strings.TrimSpace(fieldText(v))
	const mt = "multipart/report"
	if !hasPrefixFold(v, mt) {
		return false
	}
	return len(v) == len(mt) || v[len(mt)] == ';' || v[len(mt)] == ' ' || v[len(mt)] == '\t' || v[len(mt)] == '('
}

// isAddressField names the fields RFC 5230 section 4.5 has a responder
// look in for the recipient: To, Cc, Bcc and their Resent- forms.
func isAddressField(name string) bool {
	if hasPrefixFold(name, "Resent-") {
		name = name[len("Resent-"):]
	}
	return strings.EqualFold(name, "To") || strings.EqualFold(name, "Cc") || strings.EqualFold(name, "Bcc")
}

// markAddressed clears not-addressed in out for each recipient (or one
// of its aliases) named in the field value. Addresses compare without
// case and without their +detail, so bob+work@ is addressed by To: bob@.
func markAddressed(v string, rcpts []Recipient, out []RecipientVerdict, delims string) {
	addresses(v, func(local, domain string) bool {
		local = stripDetail(local, delims)
		for i := range rcpts {
			if out[i].Reasons == 0 {
				continue
			}
			if sameAddr(rcpts[i].Addr, local, domain, delims) {
				out[i].Reasons = 0
				continue
			}
			for _, a := range rcpts[i].Aliases {
				if sameAddr(a, local, domain, delims) {
					out[i].Reasons = 0
					break
				}
			}
		}
		return false
	})
}

func sameAddr(addr, local, domain, delims string) bool {
	l, d := splitAddr(addr)
	return strings.EqualFold(d, domain) && strings.EqualFold(stripDetail(l, delims), local)
}

// MarshalVerdict renders v exactly as `replygate check --json` prints it
// and as the golden files hold it: indented, with a final newline.
func MarshalVerdict(v Verdict) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	return append(b, '\n'), err
}
