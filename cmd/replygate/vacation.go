package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/replygate/replygate/vacation"
	"github.com/replygate/replygate/vacation/store"
)

// storeFile is the SQLite database in the state directory.
const storeFile = "replygate.db"

// openStore opens the configured store: PostgreSQL when dsn names one
// (several MTAs sharing state), else SQLite in the state directory
// (created if missing).
func openStore(dsn, stateDir string) (store.Store, error) {
	if dsn != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return store.OpenPostgres(ctx, dsn)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	return store.OpenSQLite(filepath.Join(stateDir, storeFile))
}

// openDaemonStore opens the store a daemon uses; it never creates an
// SQLite file, so a CLI pointed at the wrong directory says so instead of
// writing settings that no daemon reads.
func openDaemonStore(dsn, stateDir string) (store.Store, error) {
	if dsn == "" {
		if _, err := os.Stat(filepath.Join(stateDir, storeFile)); err != nil {
			return nil, fmt.Errorf("no replygate state at %s (start `replygate serve` first, or pass --state DIR)", stateDir)
		}
	}
	return openStore(dsn, stateDir)
}

// vacationJSON is a vacation as the CLI and the API show it.
type vacationJSON struct {
	Address      string    `json:"address"`
	Aliases      []string  `json:"aliases"`
	Subject      string    `json:"subject"`
	Body         string    `json:"body"`
	HTMLBody     string    `json:"html_body,omitempty"`
	FromName     string    `json:"from_name,omitempty"`
	Start        *string   `json:"start"`
	End          *string   `json:"end"`
	IntervalDays int       `json:"interval_days"`
	Version      int64     `json:"version"`
	Updated      time.Time `json:"updated"`
}

func toJSON(v store.Vacation) vacationJSON {
	j := vacationJSON{Address: v.Address, Aliases: v.Aliases, Subject: v.Subject, Body: v.Body, HTMLBody: v.HTMLBody,
		FromName: v.FromName, IntervalDays: v.IntervalDays, Version: v.Version, Updated: v.Updated}
	if j.Aliases == nil {
		j.Aliases = []string{}
	}
	loc, err := time.LoadLocation(v.TimeZone)
	if err != nil {
		loc = time.UTC
	}
	for _, p := range []struct {
		t   time.Time
		dst **string
	}{{v.Start, &j.Start}, {v.End, &j.End}} {
		if !p.t.IsZero() {
			s := p.t.In(loc).Format(time.RFC3339) // as the user gave it
			*p.dst = &s
		}
	}
	return j
}

// vacationCmd runs `replygate vacation set|get|clear|list` against the
// local store, the same SQLite file the daemon uses (WAL lets both open it).
func vacationCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New("want set, get, clear or list")}
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "set", "get", "clear", "list":
	default:
		return usageError{fmt.Errorf("unknown vacation command %q (want set, get, clear or list)", sub)}
	}
	fs := flag.NewFlagSet("vacation "+sub, flag.ContinueOnError)
	stateDir := fs.String("state", "", "the daemon's state directory")
	cfgPath := fs.String("config", "", "config file (TOML), for state_dir")
	asJSON := fs.Bool("json", false, "print JSON")
	subject := fs.String("subject", "", `reply subject (default "Auto: <original subject>")`)
	body := fs.String("body", "", "reply text")
	bodyFile := fs.String("body-file", "", "file with the reply text")
	htmlFile := fs.String("html-file", "", "file with an HTML version of the reply")
	fromName := fs.String("from-name", "", "display name of the reply's From")
	start := fs.String("start", "", "first day or instant (2026-12-24 or RFC 3339)")
	end := fs.String("end", "", "last day, inclusive, or end instant")
	interval := fs.Int("interval", 7, "days between replies to one sender (at least 1)")
	tz := fs.String("tz", "", "time zone of plain dates, an IANA name (default: this machine's)")
	var aliases stringList
	fs.Var(&aliases, "alias", "another address that names the user (repeatable)")
	pos, err := parseFlags(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return err
	}
	if err != nil {
		return err
	}
	want := 1
	if sub == "list" {
		want = 0
	}
	if len(pos) != want {
		return usageError{fmt.Errorf("vacation %s: want %d address argument(s), got %d", sub, want, len(pos))}
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if *stateDir != "" {
		cfg.StateDir = *stateDir
	}
	dir, err := cfg.ResolveStateDir()
	if err != nil {
		return err
	}
	st, err := openDaemonStore(cfg.Store, dir)
	if err != nil {
		return err
	}
	defer st.Close()
	ctx := context.Background()

	switch sub {
	case "set":
		text := *body
		if *body != "" && *bodyFile != "" {
			return usageError{errors.New("vacation set: give --body or --body-file, not both")}
		}
		if *bodyFile != "" {
			b, err := os.ReadFile(*bodyFile)
			if err != nil {
				return err
			}
			text = string(b)
		}
		if strings.TrimSpace(text) == "" {
			return usageError{errors.New("vacation set: --body or --body-file is required")}
		}
		if *tz == "" {
			*tz = localZone()
		}
		v := store.Vacation{Address: pos[0], Aliases: aliases, Subject: *subject, Body: text,
			FromName: *fromName, IntervalDays: *interval, TimeZone: *tz}
		if *htmlFile != "" {
			b, err := os.ReadFile(*htmlFile)
			if err != nil {
				return err
			}
			v.HTMLBody = string(b)
		}
		if err := checkLine("--subject", v.Subject); err != nil {
			return err
		}
		if err := checkLine("--from-name", v.FromName); err != nil {
			return err
		}
		if *interval < 1 {
			return usageError{fmt.Errorf("--interval %d: must be at least 1 day", *interval)}
		}
		loc, err := time.LoadLocation(*tz)
		if err != nil {
			return usageError{fmt.Errorf("--tz %q: %v", *tz, err)}
		}
		if *start != "" {
			if v.Start, err = vacation.ParseTime(*start, loc, false); err != nil {
				return usageError{fmt.Errorf("--start %v", err)}
			}
		}
		if *end != "" {
			if v.End, err = vacation.ParseTime(*end, loc, true); err != nil {
				return usageError{fmt.Errorf("--end %v", err)}
			}
		}
		if !v.Start.IsZero() && !v.End.IsZero() && !v.End.After(v.Start) {
			return usageError{errors.New("--end: must be after --start")}
		}
		saved, err := st.PutVacation(ctx, v)
		if err != nil {
			return err
		}
		return printVacation(stdout, saved, *asJSON)
	case "get":
		v, err := st.GetVacation(ctx, pos[0])
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%s has no vacation", pos[0])
		}
		if err != nil {
			return err
		}
		return printVacation(stdout, v, *asJSON)
	case "clear":
		err := st.DeleteVacation(ctx, pos[0])
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%s has no vacation", pos[0])
		}
		return err
	case "list":
		vs, err := st.ListVacations(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			out := make([]vacationJSON, len(vs))
			for i, v := range vs {
				out[i] = toJSON(v)
			}
			return json.NewEncoder(stdout).Encode(out)
		}
		for _, v := range vs {
			fmt.Fprintf(stdout, "%s\t%s\n", v.Address, window(v))
		}
		return nil
	}
	return usageError{fmt.Errorf("unknown vacation command %q (want set, get, clear or list)", sub)}
}

// checkLine refuses CR, LF and other control characters in a value that
// ends up in a header.
func checkLine(flag, s string) error {
	if strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return usageError{fmt.Errorf("%s: must be one line without control characters", flag)}
	}
	return nil
}

func window(v store.Vacation) string {
	loc, err := time.LoadLocation(v.TimeZone)
	if err != nil {
		loc = time.UTC
	}
	f := func(t time.Time, open string) string {
		if t.IsZero() {
			return open
		}
		return t.In(loc).Format(time.RFC3339)
	}
	return f(v.Start, "now") + " to " + f(v.End, "until cleared")
}

func printVacation(w io.Writer, v store.Vacation, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(toJSON(v))
	}
	fmt.Fprintf(w, "address: %s\n", v.Address)
	if len(v.Aliases) > 0 {
		fmt.Fprintf(w, "aliases: %s\n", strings.Join(v.Aliases, ", "))
	}
	subject := v.Subject
	if subject == "" {
		subject = "Auto: <original subject>"
	}
	fmt.Fprintf(w, "subject: %s\nactive: %s\ninterval: %d days\n\n%s\n", subject, window(v), v.IntervalDays, v.Body)
	return nil
}

// localZone names this machine's time zone as an IANA name, so that the
// stored vacation means the same to a daemon running in another zone
// (systemd services often run in UTC): $TZ, /etc/timezone, the target of
// /etc/localtime, else UTC.
func localZone() string {
	if tz := strings.TrimPrefix(os.Getenv("TZ"), ":"); tz != "" {
		return tz
	}
	if b, err := os.ReadFile("/etc/timezone"); err == nil {
		if name := strings.TrimSpace(string(b)); name != "" {
			return name
		}
	}
	if target, err := os.Readlink("/etc/localtime"); err == nil {
		if _, name, ok := strings.Cut(target, "zoneinfo/"); ok {
			return name
		}
	}
	return "UTC"
}
