// Command bench measures what replygate costs Postfix end to end:
// smtp-source → a private Postfix → smtp-sink, with no milter, replygate
// and a null go-milter milter (./nullmilter) behind it, each over a unix
// socket and over TCP, at 1, 10 and 50 concurrent SMTP sessions. The
// configurations alternate within each round, in an order rotated every
// round, so that noise from the machine hits them all alike. It prints a
// Markdown table (see README.md). As root, from the repository:
//
//	go run ./contrib/bench -out /tmp/bench.md
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/replygate/replygate/internal/mtalab"
)

// loads are the recipe's: N messages at C concurrent sessions, after an
// untimed warm-up.
var loads = []load{
	{C: 1, N: 500, Warm: 10},
	{C: 10, N: 2000, Warm: 50},
	{C: 50, N: 5000, Warm: 150},
}

func main() {
	quick := flag.Bool("quick", false, "send a fifth of the messages (N/5) for a fast check")
	rounds := flag.Int("rounds", 3, "rounds; every configuration runs once per round and concurrency")
	out := flag.String("out", "", "also write the Markdown report to this file")
	only := flag.String("configs", "", "comma-separated configurations to run (default: all; none is always run)")
	flag.Parse()
	if err := run(*quick, *rounds, *out, *only); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(quick bool, rounds int, out, only string) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: the private Postfix instance needs it")
	}
	if rounds < 1 {
		return errors.New("-rounds must be at least 1")
	}
	cfgs, err := selectConfigs(only)
	if err != nil {
		return err
	}
	ld := loads
	if quick {
		ld = nil
		for _, l := range loads {
			l.N /= 5
			ld = append(ld, l)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	e, cleanup, err := setup(ctx)
	if err != nil {
		return err
	}
	defer cleanup()

	rep := report{
		Command: "go run ./contrib/bench " + strings.Join(os.Args[1:], " "),
		Start:   time.Now(),
		LoadAvg: loadavg(),
		Configs: cfgs,
		Loads:   ld,
		Rounds:  rounds,
		Machine: machine(),
	}
	total := rounds * len(ld) * len(cfgs)
	i := 0
	for r := range rounds {
		for _, l := range ld {
			for k := range cfgs {
				c := cfgs[(k+r)%len(cfgs)] // rotated every round
				i++
				res := e.runOnce(ctx, c, l)
				res.Round = r + 1
				rep.Results = append(rep.Results, res)
				fmt.Fprintf(os.Stderr, "[%d/%d] round %d %s\n", i, total, r+1, res.line())
				if ctx.Err() != nil {
					return ctx.Err()
				}
			}
		}
	}
	rep.End = time.Now()
	rep.LoadAvgEnd = loadavg()

	text := rep.markdown()
	fmt.Print(text)
	if out != "" {
		if err := os.WriteFile(out, []byte(text), 0o644); err != nil {
			return err
		}
	}
	if n := rep.failed(); n > 0 {
		return fmt.Errorf("%d of %d runs failed (listed in the report)", n, len(rep.Results))
	}
	return nil
}

func selectConfigs(only string) ([]config, error) {
	if only == "" {
		return configs, nil
	}
	want := map[string]bool{"none": true}
	for _, n := range strings.Split(only, ",") {
		want[strings.TrimSpace(n)] = true
	}
	var out []config
	for _, c := range configs {
		if want[c.Name] {
			out = append(out, c)
			delete(want, c.Name)
		}
	}
	for n := range want {
		return nil, fmt.Errorf("-configs: no configuration %q", n)
	}
	return out, nil
}

// setup installs the Debian packages if missing, builds replygate and the
// null milter, and finds the programs and files a run needs.
func setup(ctx context.Context) (*env, func(), error) {
	root, err := repoRoot()
	if err != nil {
		return nil, nil, err
	}
	deps := exec.CommandContext(ctx, filepath.Join(root, "scripts", "install-test-deps"))
	deps.Stdout, deps.Stderr = os.Stderr, os.Stderr
	if err := deps.Run(); err != nil {
		return nil, nil, fmt.Errorf("scripts/install-test-deps: %w", err)
	}
	bin, err := os.MkdirTemp("", "replygate-bench-bin-")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { os.RemoveAll(bin) }
	e := &env{
		replygate:  filepath.Join(bin, "replygate"),
		nullmilter: filepath.Join(bin, "nullmilter"),
		message:    filepath.Join(root, "contrib", "bench", "message.eml"),
	}
	for _, b := range []struct{ out, pkg string }{{e.replygate, "./cmd/replygate"}, {e.nullmilter, "./contrib/bench/nullmilter"}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.out, b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	main, err := os.ReadFile(filepath.Join(root, "contrib", "postfix", "main.cf"))
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	if !strings.Contains(string(main), contribMilter) {
		cleanup()
		return nil, nil, fmt.Errorf("contrib/postfix/main.cf no longer names %s; update contrib/bench", contribMilter)
	}
	e.mainCF = string(main)
	for _, p := range []struct {
		dst  *string
		name string
	}{{&e.smtpSource, "smtp-source"}, {&e.smtpSink, "smtp-sink"}} {
		if *p.dst, err = mtalab.LookPath(p.name); err != nil {
			cleanup()
			return nil, nil, err
		}
	}
	return e, cleanup, nil
}

// repoRoot is the directory holding go.mod, found from the working
// directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory: run from the repository")
		}
		dir = parent
	}
}
