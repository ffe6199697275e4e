package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/replygate/replygate/vacation/api"
)

// vacationCmd runs `replygate vacation set|get|clear|list` through the
// API: the local daemon's socket by default, a remote one with --server.
// The daemon checks every field; the CLI only reads files and flags.
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
	cf := addClientFlags(fs)
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
	pos, err := parseFlagsHelp(fs, args, stdout)
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
	var req api.VacationRequest
	if sub == "set" {
		if req, err = vacationRequest(*body, *bodyFile, *htmlFile); err != nil {
			return err
		}
		req.Subject, req.FromName, req.Start, req.End, req.Aliases = *subject, *fromName, *start, *end, aliases
		req.IntervalDays, req.TimeZone = *interval, *tz
		if *interval < 1 {
			return usageError{fmt.Errorf("--interval %d: must be at least 1 day", *interval)}
		}
		if req.TimeZone == "" {
			req.TimeZone = localZone()
		}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	ctx := context.Background()
	switch sub {
	case "set":
		v, err := c.PutVacation(ctx, pos[0], req)
		if err != nil {
			return cliError(err)
		}
		return printVacation(stdout, v, *asJSON)
	case "get":
		v, err := c.GetVacation(ctx, pos[0])
		if notFound(err) {
			return fmt.Errorf("%s has no vacation", pos[0])
		}
		if err != nil {
			return cliError(err)
		}
		return printVacation(stdout, v, *asJSON)
	case "clear":
		err := c.DeleteVacation(ctx, pos[0])
		if notFound(err) {
			return fmt.Errorf("%s has no vacation", pos[0])
		}
		return cliError(err)
	default: // list
		vs, err := c.ListVacations(ctx)
		if err != nil {
			return cliError(err)
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(vs)
		}
		for _, v := range vs {
			fmt.Fprintf(stdout, "%s\t%s\n", v.Address, window(v))
		}
		return nil
	}
}

// vacationRequest reads the reply's text from the flags and files.
func vacationRequest(body, bodyFile, htmlFile string) (api.VacationRequest, error) {
	var req api.VacationRequest
	if body != "" && bodyFile != "" {
		return req, usageError{errors.New("vacation set: give --body or --body-file, not both")}
	}
	req.Body = body
	if bodyFile != "" {
		b, err := os.ReadFile(bodyFile)
		if err != nil {
			return req, err
		}
		req.Body = string(b)
	}
	if strings.TrimSpace(req.Body) == "" {
		return req, usageError{errors.New("vacation set: --body or --body-file is required")}
	}
	if htmlFile != "" {
		b, err := os.ReadFile(htmlFile)
		if err != nil {
			return req, err
		}
		req.HTMLBody = string(b)
	}
	return req, nil
}

func notFound(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}

func window(v api.Vacation) string {
	f := func(t *string, open string) string {
		if t == nil {
			return open
		}
		return *t
	}
	return f(v.Start, "now") + " to " + f(v.End, "until cleared")
}

func printVacation(w io.Writer, v api.Vacation, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(v)
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

// stampingCmd runs `replygate stamping set ADDRESS on|off` and
// `replygate stamping get ADDRESS`: whether all of a user's own mail is
// stamped X-Allow-Auto-Reply: no.
func stampingCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "set" && args[0] != "get") {
		return usageError{errors.New("want set ADDRESS on|off, or get ADDRESS")}
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("stamping "+sub, flag.ContinueOnError)
	cf := addClientFlags(fs)
	pos, err := parseFlagsHelp(fs, args, stdout)
	if err != nil {
		return err
	}
	want := map[string]int{"set": 2, "get": 1}[sub]
	if len(pos) != want {
		return usageError{fmt.Errorf("stamping %s: want %d argument(s), got %d", sub, want, len(pos))}
	}
	var on bool
	if sub == "set" {
		switch pos[1] {
		case "on", "true", "yes":
			on = true
		case "off", "false", "no":
		default:
			return usageError{fmt.Errorf("stamping set: %q: want on or off", pos[1])}
		}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	if sub == "set" {
		on, err = c.SetStamping(context.Background(), pos[0], on)
	} else {
		on, err = c.GetStamping(context.Background(), pos[0])
	}
	if err != nil {
		return cliError(err)
	}
	state := "off"
	if on {
		state = "on"
	}
	fmt.Fprintf(stdout, "%s: stamping all mail %s\n", pos[0], state)
	return nil
}

// tokenCmd runs `replygate token create|list|revoke` (admins): bearer
// tokens for integrations. The secret is printed once, at creation.
func tokenCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "create" && args[0] != "list" && args[0] != "revoke") {
		return usageError{errors.New("want create NAME (--admin | --address ADDR...), list, or revoke ID")}
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("token "+sub, flag.ContinueOnError)
	cf := addClientFlags(fs)
	admin := fs.Bool("admin", false, "the token manages every address")
	asJSON := fs.Bool("json", false, "print JSON")
	var addrs stringList
	fs.Var(&addrs, "address", "an address the token manages (repeatable)")
	pos, err := parseFlagsHelp(fs, args, stdout)
	if err != nil {
		return err
	}
	want := map[string]int{"create": 1, "list": 0, "revoke": 1}[sub]
	if len(pos) != want {
		return usageError{fmt.Errorf("token %s: want %d argument(s), got %d", sub, want, len(pos))}
	}
	if sub == "create" && *admin == (len(addrs) > 0) {
		return usageError{errors.New("token create: give --admin or --address, not both")}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	ctx := context.Background()
	switch sub {
	case "create":
		t, err := c.CreateToken(ctx, api.TokenRequest{Name: pos[0], Admin: *admin, Addresses: addrs})
		if err != nil {
			return cliError(err)
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(t)
		}
		fmt.Fprintf(stdout, "%s\n# id %s; shown once: keep it secret. Use: Authorization: Bearer <token>\n", t.Token, t.ID)
		return nil
	case "list":
		ts, err := c.ListTokens(ctx)
		if err != nil {
			return cliError(err)
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(ts)
		}
		for _, t := range ts {
			scope := strings.Join(t.Addresses, ",")
			if t.Admin {
				scope = "admin"
			}
			fmt.Fprintf(stdout, "%s\t%s\t%s\t%s\n", t.ID, t.Name, scope, t.Created.Format("2006-01-02"))
		}
		return nil
	default:
		return cliError(c.RevokeToken(ctx, pos[0]))
	}
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
