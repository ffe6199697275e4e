package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Config is the policy part of replygate's configuration (the [policy]
// table of the TOML file). Every field has a meaningful zero value, but
// lists start from DefaultConfig, so an admin who sets one replaces it.
type Config struct {
	// SystemSenders are extra patterns for envelope senders that are
	// robots, beside the built-in RFC 5230 section 4.6 names. A pattern
	// without "@" matches the local part, one with "@" the whole address;
	// "*" matches any run of characters; case is ignored.
	SystemSenders []string `toml:"system_senders"`
	// SpamFlags are "Field: prefix" pairs: a message whose field value
	// starts with the prefix (any case) is flagged spam.
	SpamFlags []string `toml:"spam_flags"`
	// ProductHeaders are field-name prefixes that only robots write (bug
	// trackers, CI, monitoring). Such mail is never answered and, when
	// outbound, is stamped.
	ProductHeaders []string `toml:"product_headers"`
	// DisableBulkHeuristic turns off the bulk-mailer fingerprints
	// (Feedback-ID, campaign headers) that suppress replies to newsletters.
	DisableBulkHeuristic bool `toml:"disable_bulk_heuristic"`
	// RecipientDelimiter separates an address's detail ("bob+tag"), as
	// Postfix's recipient_delimiter. Each character is a delimiter.
	RecipientDelimiter string `toml:"recipient_delimiter"`

	// OutboundDaemons are MTA daemon names ({daemon_name}, Postfix's
	// milter_macro_daemon_name) whose mail is outbound.
	OutboundDaemons []string `toml:"outbound_daemons"`
	// InternalNetworks are client networks whose mail is outbound.
	InternalNetworks []netip.Prefix `toml:"internal_networks"`

	// MachineSenders are envelope sender patterns (as SystemSenders) of
	// robots on this site: the bug tracker, CI, monitoring.
	MachineSenders []string `toml:"machine_senders"`
	// MachineLogins are SASL login patterns of robots.
	MachineLogins []string `toml:"machine_logins"`
	// MachineNetworks are client networks where only robots send from.
	MachineNetworks []netip.Prefix `toml:"machine_networks"`
	// OptInSenders are senders who asked for all their outbound mail to
	// be stamped. The store adds more at run time (Envelope.OptIn).
	OptInSenders []string `toml:"opt_in_senders"`
	// AddSuppressHeader also stamps "X-Auto-Response-Suppress: All",
	// which Exchange and Outlook honour.
	AddSuppressHeader bool `toml:"add_suppress_header"`
}

// DefaultConfig returns the configuration used when the file says nothing.
func DefaultConfig() Config {
	return Config{
		SystemSenders: []string{
			"noreply", "no-reply", "no_reply", "donotreply", "do-not-reply", "do_not_reply",
			"bounce", "bounces", "bounce-*", "bounces-*", "*-bounces", "*+bounces-*", "*-owner", "*-return-*", "nobody",
		},
		SpamFlags:          []string{"X-Spam-Flag: yes", "X-Spam-Status: yes", "X-Spam: yes"},
		ProductHeaders:     defaultProductHeaders(),
		RecipientDelimiter: "+",
		OutboundDaemons:    []string{"ORIGINATING"},
	}
}

// defaultProductHeaders are the field-name prefixes that bug trackers, CI
// and monitoring systems put on every notification; each was read off the
// product's real mail (see testdata/messages/tracker-*, ci-*, monitor-*).
func defaultProductHeaders() []string {
	return []string{
		"X-GitHub-",       // GitHub: X-GitHub-Reason, -Sender, -Recipient
		"X-GitLab-",       // GitLab: X-GitLab-Project, -NotificationReason, -Pipeline-Id
		"X-JIRA-",         // Jira Server/DC: X-JIRA-FingerPrint
		"X-Atlassian-",    // Jira/Confluence Cloud: X-Atlassian-Mail-Message-Id
		"X-Bugzilla-",     // Bugzilla: X-Bugzilla-Reason, -Type, -Product
		"X-Redmine-",      // Redmine: X-Redmine-Project, -Issue-Id, -Host
		"X-Jenkins-",      // Jenkins email-ext: X-Jenkins-Job, -Result
		"X-Gerrit-",       // Gerrit: X-Gerrit-MessageType, -Change-Id
		"X-Phabricator-",  // Phabricator: X-Phabricator-Sent-This-Message
		"X-Sentry-",       // Sentry
		"X-Trac-",         // Trac: X-Trac-Ticket-ID, -Version
		"X-Gitea-",        // Gitea: X-Gitea-Reason, -Sender
		"X-Forgejo-",      // Forgejo
		"X-Launchpad-",    // Launchpad: X-Launchpad-Bug, -Message-Rationale
		"X-Cron-Env",      // cron (Vixie/cronie): one X-Cron-Env per variable
		"X-Zabbix-",       // Zabbix
		"X-Icinga-",       // Icinga
		"X-Nagios-",       // Nagios
		"X-Grafana-",      // Grafana
		"X-Alertmanager-", // Prometheus Alertmanager (custom templates)
	}
}

type pattern struct{ glob string }

func (p pattern) match(local, addr string) bool {
	if strings.IndexByte(p.glob, '@') >= 0 {
		return globFold(p.glob, addr)
	}
	return globFold(p.glob, local)
}

type spamFlag struct{ name, prefix string }

func compilePatterns(key string, globs []string) ([]pattern, error) {
	var errs []error
	out := make([]pattern, 0, len(globs))
	for _, g := range globs {
		g = strings.TrimSpace(g)
		if g == "" || strings.ContainsAny(g, " \t\r\n<>") {
			errs = append(errs, fmt.Errorf("%s: %q is not an address pattern", key, g))
			continue
		}
		out = append(out, pattern{g})
	}
	return out, errors.Join(errs...)
}

// Validate reports every problem in c, naming the key.
func (c Config) Validate() error {
	_, err := New(c)
	return err
}
