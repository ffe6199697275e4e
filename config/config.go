// Package config reads replygate's TOML file. Every key is optional and
// Default holds the value of each; contrib/replygate.toml lists them all,
// and a test keeps that file and Default equal.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/replygate/replygate/milter"
	"github.com/replygate/replygate/policy"
)

// Config is the whole file.
type Config struct {
	// StateDir holds the store and, by default, nothing else. Empty means
	// $STATE_DIRECTORY (systemd's StateDirectory=), else
	// $XDG_STATE_HOME/replygate, else ~/.local/state/replygate.
	StateDir string `toml:"state_dir"`
	// Store names a PostgreSQL database ("postgres://user@host/db") shared
	// by several replygate instances, one per MX; "" keeps the embedded
	// SQLite file in StateDir.
	Store string `toml:"store"`
	// Relay is the SMTP server that vacation replies are handed to.
	Relay string `toml:"relay"`
	// ShutdownTimeout bounds the drain on SIGTERM.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`

	Milter   Milter        `toml:"milter"`
	API      API           `toml:"api"`
	Policy   policy.Config `toml:"policy"`
	Vacation Vacation      `toml:"vacation"`
}

// Vacation is the [vacation] table: the responder and its outbox.
type Vacation struct {
	// EnvelopeFromUser sends replies from the user's address instead of
	// the null sender <> (RFC 3834 recommends <>; some relays refuse it).
	EnvelopeFromUser bool `toml:"envelope_from_user"`
	// Hostname names this machine in replies' Message-IDs; "" means the
	// user's domain.
	Hostname string `toml:"hostname"`
	// RelaySessions bounds the SMTP sessions to the relay at once.
	RelaySessions int `toml:"relay_sessions"`
	// OfferTimeout bounds the store work done while the MTA waits; past
	// it the message is accepted without a reply and the event counted.
	OfferTimeout Duration `toml:"offer_timeout"`
	// MaxOutbox bounds the replies queued and not yet sent; past it new
	// replies are refused, logged and counted.
	MaxOutbox int `toml:"max_outbox"`
	// OutboxLease is how long a reply claimed for sending belongs to the
	// instance that claimed it. With several instances sharing
	// PostgreSQL, the replies of one that died are sent by another this
	// long after it claimed them. A send is cut off at half the lease
	// (at most 60s), so that it never outlives it.
	OutboxLease Duration `toml:"outbox_lease"`
	// UserCredit is how many unsent replies each user may have queued
	// before drawing from the shared CreditPool; a user's storm cannot
	// take the outbox from everyone else. Out of credit, the milter
	// answers with its fail action.
	UserCredit int `toml:"user_credit"`
	CreditPool int `toml:"credit_pool"`
	// TrustedAuthservID, when set, answers only senders that passed SPF,
	// DKIM or DMARC in the Authentication-Results field of this
	// authserv-id (your border MTA's); "" trusts and requires none.
	TrustedAuthservID string `toml:"trusted_authserv_id"`
	// DKIMKey is a PEM private key (RSA or Ed25519) to sign replies with,
	// as DKIMSelector._domainkey.DKIMDomain; "" signs nothing.
	DKIMKey      string `toml:"dkim_key"`
	DKIMDomain   string `toml:"dkim_domain"`
	DKIMSelector string `toml:"dkim_selector"`
}

// Milter is the [milter] table.
type Milter struct {
	// Listen is a milter spec: inet:127.0.0.1:8894 by default, since it
	// works for a chrooted Postfix and any user; unix:/path is as fast
	// (BENCHMARKS.md) where the MTA can reach the path.
	Listen string `toml:"listen"`
	// SocketMode is the mode of a unix socket, as an octal string.
	SocketMode string `toml:"socket_mode"`
	// MaxSessions bounds live MTA connections; beyond it FailAction answers.
	MaxSessions int `toml:"max_sessions"`
	// IdleTimeout ends a session whose MTA sends nothing for that long.
	IdleTimeout Duration `toml:"idle_timeout"`
	// FailAction answers overload and internal errors: accept or tempfail.
	FailAction string `toml:"fail_action"`
	// TraceHeader adds X-Replygate-Verdict to every message.
	TraceHeader bool `toml:"trace_header"`
	// MaxHeaderFields and MaxHeaderBytes bound what is kept per message.
	MaxHeaderFields int `toml:"max_header_fields"`
	MaxHeaderBytes  int `toml:"max_header_bytes"`
}

// API is the [api] table.
type API struct {
	Listen string `toml:"listen"` // host:port
	// Socket is the local CLI's unix socket, "" for api.sock in the
	// state directory. Its peer's uid authenticates: the daemon's own
	// user and root are admins there.
	Socket string `toml:"socket"`
	// TLSCert and TLSKey turn on HTTPS; without them the API only
	// listens on loopback.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// ClientCA verifies client certificates: one whose SAN e-mail
	// address is X manages X.
	ClientCA string `toml:"client_ca"`
	// Admins are admin certificates, by "sha256:…" fingerprint or by
	// subject ("CN=ops@example.com,OU=replygate-admin").
	Admins []string `toml:"admins"`
}

// DefaultMilterListen is where the milter listens with no config.
const DefaultMilterListen = "inet:127.0.0.1:8894"

// Default returns the configuration of a file that sets nothing.
func Default() Config {
	return Config{
		Relay:           "127.0.0.1:25",
		ShutdownTimeout: Duration(30 * time.Second),
		Milter: Milter{
			Listen:          DefaultMilterListen,
			SocketMode:      "0666",
			MaxSessions:     1000,
			IdleTimeout:     Duration(10 * time.Minute),
			FailAction:      string(milter.FailAccept),
			MaxHeaderFields: policy.DefaultLimits.MaxFields,
			MaxHeaderBytes:  policy.DefaultLimits.MaxBytes,
		},
		API:    API{Listen: "127.0.0.1:8895"},
		Policy: policy.DefaultConfig(),
		Vacation: Vacation{
			RelaySessions: 2,
			OfferTimeout:  Duration(time.Second),
			MaxOutbox:     10000,
			OutboxLease:   Duration(130 * time.Second), // vacation.OutboxConfig's default: 2×60s+10s
			UserCredit:    10,
			CreditPool:    1000,
		},
	}
}

// Duration reads "30s", "10m" from TOML.
type Duration time.Duration

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration (like 30s or 10m)", b)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Load reads path over the defaults. An unknown key is an error that
// names it, and every bad value is reported at once.
func Load(path string) (Config, error) {
	c := Default()
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return c, fmt.Errorf("config %s: unknown key %s", path, strings.Join(keys, ", "))
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Validate reports every problem, each naming its key.
func (c Config) Validate() error {
	var errs []error
	if _, err := milter.ParseSpec(c.Milter.Listen); err != nil {
		errs = append(errs, fmt.Errorf("milter.listen: %w", err))
	}
	if _, err := c.SocketMode(); err != nil {
		errs = append(errs, fmt.Errorf("milter.socket_mode: %w", err))
	}
	if c.Milter.MaxSessions < 1 {
		errs = append(errs, fmt.Errorf("milter.max_sessions: %d must be at least 1", c.Milter.MaxSessions))
	}
	if c.Milter.IdleTimeout < Duration(time.Second) {
		errs = append(errs, fmt.Errorf("milter.idle_timeout: %v must be at least 1s", time.Duration(c.Milter.IdleTimeout)))
	}
	switch milter.FailAction(c.Milter.FailAction) {
	case milter.FailAccept, milter.FailTempfail:
	default:
		errs = append(errs, fmt.Errorf("milter.fail_action: %q (want accept or tempfail)", c.Milter.FailAction))
	}
	if c.Milter.MaxHeaderFields < 10 {
		errs = append(errs, fmt.Errorf("milter.max_header_fields: %d must be at least 10", c.Milter.MaxHeaderFields))
	}
	if c.Milter.MaxHeaderBytes < 4096 {
		errs = append(errs, fmt.Errorf("milter.max_header_bytes: %d must be at least 4096", c.Milter.MaxHeaderBytes))
	}
	if err := checkHostPort(c.API.Listen); err != nil {
		errs = append(errs, fmt.Errorf("api.listen: %w", err))
	} else if c.API.TLSCert == "" && !loopback(c.API.Listen) {
		errs = append(errs, fmt.Errorf("api.listen: %q is beyond loopback; set api.tls_cert and api.tls_key first (settings must not travel in clear text)", c.API.Listen))
	}
	if (c.API.TLSCert == "") != (c.API.TLSKey == "") {
		errs = append(errs, errors.New("api.tls_cert and api.tls_key: set both or neither"))
	}
	if c.API.ClientCA != "" && c.API.TLSCert == "" {
		errs = append(errs, errors.New("api.client_ca: client certificates need TLS; set api.tls_cert and api.tls_key"))
	}
	for _, a := range c.API.Admins {
		if !strings.HasPrefix(a, "sha256:") && !strings.Contains(a, "=") {
			errs = append(errs, fmt.Errorf("api.admins: %q is neither a sha256:… fingerprint nor a subject like CN=ops@example.com", a))
		}
	}
	if c.API.Socket != "" && !filepath.IsAbs(c.API.Socket) {
		errs = append(errs, fmt.Errorf("api.socket: %q must be an absolute path", c.API.Socket))
	}
	if err := checkHostPort(c.Relay); err != nil {
		errs = append(errs, fmt.Errorf("relay: %w", err))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, errors.New("shutdown_timeout: must not be negative"))
	}
	if c.Store != "" && !strings.HasPrefix(c.Store, "postgres://") && !strings.HasPrefix(c.Store, "postgresql://") {
		errs = append(errs, fmt.Errorf("store: want \"\" (embedded SQLite) or a postgres:// URL"))
	}
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("state_dir: %q must be an absolute path", c.StateDir))
	}
	if c.Vacation.RelaySessions < 1 {
		errs = append(errs, fmt.Errorf("vacation.relay_sessions: %d must be at least 1", c.Vacation.RelaySessions))
	}
	if (c.Vacation.DKIMKey == "") != (c.Vacation.DKIMDomain == "") || (c.Vacation.DKIMKey == "") != (c.Vacation.DKIMSelector == "") {
		errs = append(errs, errors.New("vacation.dkim_key, dkim_domain and dkim_selector: set all three or none"))
	}
	if c.Vacation.UserCredit < 1 || c.Vacation.CreditPool < 0 {
		errs = append(errs, fmt.Errorf("vacation.user_credit %d, credit_pool %d: want at least 1 and 0", c.Vacation.UserCredit, c.Vacation.CreditPool))
	}
	if c.Vacation.MaxOutbox < 1 {
		errs = append(errs, fmt.Errorf("vacation.max_outbox: %d must be at least 1", c.Vacation.MaxOutbox))
	}
	if c.Vacation.OutboxLease < Duration(2*time.Second) {
		errs = append(errs, fmt.Errorf("vacation.outbox_lease: %v must be at least 2s", time.Duration(c.Vacation.OutboxLease)))
	}
	if c.Vacation.OfferTimeout < Duration(10*time.Millisecond) {
		errs = append(errs, fmt.Errorf("vacation.offer_timeout: %v must be at least 10ms", time.Duration(c.Vacation.OfferTimeout)))
	}
	if err := c.Policy.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// loopback reports whether host:port names only this machine.
func loopback(hostport string) bool {
	host, _, _ := net.SplitHostPort(hostport)
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q: want HOST:PORT", s)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%q: bad port", s)
	}
	if host == "" {
		return fmt.Errorf("%q: no host", s)
	}
	return nil
}

// SocketMode parses milter.socket_mode.
func (c Config) SocketMode() (os.FileMode, error) {
	m, err := strconv.ParseUint(c.Milter.SocketMode, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("%q is not an octal file mode like 0660", c.Milter.SocketMode)
	}
	return os.FileMode(m), nil
}

// MilterConfig is the milter package's view of the file.
func (c Config) MilterConfig() milter.Config {
	return milter.Config{
		MaxSessions:  c.Milter.MaxSessions,
		IdleTimeout:  time.Duration(c.Milter.IdleTimeout),
		FailAction:   milter.FailAction(c.Milter.FailAction),
		TraceHeader:  c.Milter.TraceHeader,
		Limits:       c.Limits(),
		OfferTimeout: time.Duration(c.Vacation.OfferTimeout),
	}
}

// Limits are the header bounds, shared by the milter and `check`.
func (c Config) Limits() policy.Limits {
	return policy.Limits{MaxFields: c.Milter.MaxHeaderFields, MaxBytes: c.Milter.MaxHeaderBytes}
}

// ResolveStateDir returns the state directory to use: the configured
// one, systemd's, the XDG one, or ~/.local/state/replygate.
func (c Config) ResolveStateDir() (string, error) {
	if c.StateDir != "" {
		return c.StateDir, nil
	}
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		return strings.Split(d, ":")[0], nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "replygate"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no state directory: set state_dir or --state (%w)", err)
	}
	return filepath.Join(home, ".local", "state", "replygate"), nil
}
