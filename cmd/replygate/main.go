// Command replygate is the milter that stops automatic replies from
// answering robots, and stamps robots' own mail. See README.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	_ "time/tzdata" // vacation windows in any zone, even without the system's tzdata

	"github.com/replygate/replygate/config"
)

const usage = `replygate: the auto-reply gate milter

Usage:
  replygate serve [--config FILE] [--milter SPEC] [--api ADDR] [--state DIR] [--relay HOST:PORT]
  replygate check [--json] [--outbound] [--mail-from ADDR] [--rcpt ADDR]... [--auth USER]
                  [--client-ip IP] [--daemon NAME] [--config FILE] [FILE|-]
  replygate vacation set ADDRESS [--subject S] (--body TEXT | --body-file F) [--from-name NAME]
                     [--start TIME] [--end TIME] [--interval DAYS] [--alias ADDR]... [--tz ZONE]
  replygate vacation get ADDRESS [--json]
  replygate vacation clear ADDRESS
  replygate vacation list [--json]
  replygate stamping set ADDRESS on|off
  replygate stamping get ADDRESS
  replygate token create NAME (--admin | --address ADDR...)
  replygate token list
  replygate token revoke ID
        (these: the local daemon by default, [--state DIR] [--config FILE];
         a remote one with --server URL [--cert F --key F] [--ca F] [--token T];
         TIME is 2026-12-24 or RFC 3339)
  replygate ca init
  replygate ca issue ADDRESS [--admin] [--out DIR]
  replygate ca serve-cert HOST... [--out DIR]
              (all: [--dir DIR] [--days N] [--force] [--state DIR] [--config FILE])
  replygate version

Run "replygate COMMAND -h" for a command's flags.
`

var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is main without the process: tests call it directly.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stderr)
	case "check":
		err = check(args[1:], stdin, stdout, stderr)
	case "vacation":
		err = vacationCmd(args[1:], stdout)
	case "stamping":
		err = stampingCmd(args[1:], stdout)
	case "token":
		err = tokenCmd(args[1:], stdout)
	case "ca":
		err = caCmd(args[1:], stdout)
	case "version", "--version":
		fmt.Fprintln(stdout, "replygate", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "replygate: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		// One line, even for errors.Join's several problems.
		fmt.Fprintf(stderr, "replygate %s: %s\n", args[0], strings.ReplaceAll(err.Error(), "\n", "; "))
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

// usageError marks bad flags (exit status 2).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// parseFlags parses args, allowing flags after positional arguments
// (`replygate check mail.eml --json`), and returns the positionals.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	return parseFlagsHelp(fs, args, nil)
}

// parseFlagsHelp is parseFlags that, given -h, prints the flags to help.
func parseFlagsHelp(fs *flag.FlagSet, args []string, help io.Writer) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				if help != nil {
					fs.SetOutput(help)
					fs.PrintDefaults()
				}
				return nil, err
			}
			return nil, usageError{err}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// loadConfig reads the file if one was named, else the defaults.
func loadConfig(path string) (config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}
