package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/replygate/replygate/internal/mtalab"
)

// contribMilter is the milter address contrib/postfix/main.cf names; each
// run puts its milter's address in its place.
const contribMilter = "inet:127.0.0.1:8894"

// config is one thing behind Postfix.
type config struct {
	Name    string
	Program string // "replygate", "nullmilter", or "" for no milter
	Network string // "unix" or "tcp"
	Header  string // the field the milter adds to every message
}

var configs = []config{
	{Name: "none"},
	{Name: "replygate-unix", Program: "replygate", Network: "unix", Header: "X-Replygate-Verdict"},
	{Name: "replygate-tcp", Program: "replygate", Network: "tcp", Header: "X-Replygate-Verdict"},
	{Name: "null-unix", Program: "nullmilter", Network: "unix", Header: "X-Allow-Auto-Reply"},
	{Name: "null-tcp", Program: "nullmilter", Network: "tcp", Header: "X-Allow-Auto-Reply"},
}

// replygateConfig is replygate's TOML in the bench, as in the Postfix
// integration tests.
const replygateConfig = `# contrib/bench
[milter]
# One header on every message, as the null milter adds one; the bench
# checks that every delivered message carries it.
trace_header = true

[policy]
# Loopback clients are internal by default; with no internal networks the
# load from smtp-source stands for inbound mail from the Internet.
internal_networks = []
`

// load is N timed messages at C concurrent sessions, one message per
// session, after Warm untimed ones.
type load struct{ C, N, Warm int }

// result is one run.
type result struct {
	Config       config
	Load         load
	Round        int
	Accept       float64  // N ÷ seconds until smtp-source exited
	Deliver      float64  // N ÷ seconds until the sink had every message
	CPUms        float64  // milter CPU (user+system) per message, ms
	MachineCPUms float64  // all CPUs busy (user, nice, system, irq, softirq) per message, ms
	Warnings     int      // warning/error/fatal/panic lines in Postfix's log
	WarningTexts []string // their texts, without duplicates
	Delivered,
	WithHeader int // messages at the sink (warm-up included), and how many carry the header
	Err error
}

func (r result) line() string {
	s := fmt.Sprintf("%s C=%d N=%d: ", r.Config.Name, r.Load.C, r.Load.N)
	if r.Err != nil {
		return s + "FAILED: " + r.Err.Error()
	}
	s += fmt.Sprintf("accept %.1f/s, delivered %.1f/s, machine %.2f CPU-ms/msg", r.Accept, r.Deliver, r.MachineCPUms)
	if r.Config.Program != "" {
		s += fmt.Sprintf(", milter %.3f CPU-ms/msg, header on %d/%d", r.CPUms, r.WithHeader, r.Delivered)
	}
	if r.Warnings > 0 {
		s += fmt.Sprintf(", %d Postfix warnings", r.Warnings)
	}
	return s
}

// env is what every run uses.
type env struct {
	replygate, nullmilter string // built binaries
	smtpSource, smtpSink  string
	message               string // contrib/bench/message.eml
	mainCF                string // contrib/postfix/main.cf
}

// runOnce starts a sink, the milter and a Postfix instance, all fresh,
// sends the warm-up and then the timed messages, and checks what arrived.
func (e *env) runOnce(ctx context.Context, c config, l load) (res result) {
	res = result{Config: c, Load: l}
	dir, err := os.MkdirTemp("", "replygate-bench-")
	if err != nil {
		res.Err = err
		return res
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil { // smtpd (user postfix) reaches the socket
		res.Err = err
		return res
	}
	res.Err = e.measure(ctx, dir, c, l, &res)
	return res
}

func (e *env) measure(ctx context.Context, dir string, c config, l load, res *result) error {
	sk, err := e.startSink()
	if err != nil {
		return fmt.Errorf("smtp-sink: %w", err)
	}
	defer sk.stop()

	var m *proc
	milterSpec := ""
	if c.Program != "" {
		if m, milterSpec, err = e.startMilter(dir, c); err != nil {
			return fmt.Errorf("%s: %w", c.Program, err)
		}
		defer m.stop()
	}

	pf, err := mtalab.NewPostfix(e.postfixConfig(milterSpec, sk.addr))
	if err != nil {
		return fmt.Errorf("postfix: %w", err)
	}
	defer func() {
		pf.Stop()
		os.RemoveAll(pf.Dir)
	}()
	smtpd := pf.Addr(mtalab.SMTPService)

	// Warm-up: Postfix starts its smtpd, cleanup and smtp processes, the
	// milter its goroutines; none of it is timed.
	if err := e.send(ctx, smtpd, l.C, l.Warm); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if _, err := sk.wait(ctx, l.Warm, time.Minute); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if err := waitQueueEmpty(ctx, pf.QueueDir, 30*time.Second); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}

	busy0, err := busyCPU()
	if err != nil {
		return err
	}
	var cpu0 time.Duration
	if m != nil {
		if cpu0, err = cpuTime(m.cmd.Process.Pid); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := e.send(ctx, smtpd, l.C, l.N); err != nil {
		return err
	}
	accepted := time.Since(start)
	last, err := sk.wait(ctx, l.Warm+l.N, 2*time.Minute)
	if err != nil {
		return err
	}
	delivered := last.Sub(start)
	busy1, err := busyCPU()
	if err != nil {
		return err
	}
	res.MachineCPUms = float64(busy1-busy0) / float64(time.Millisecond) / float64(l.N)
	if m != nil {
		cpu1, err := cpuTime(m.cmd.Process.Pid)
		if err != nil {
			return err
		}
		res.CPUms = float64(cpu1-cpu0) / float64(time.Millisecond) / float64(l.N)
	}
	res.Accept = float64(l.N) / accepted.Seconds()
	res.Deliver = float64(l.N) / delivered.Seconds()

	if err := waitQueueEmpty(ctx, pf.QueueDir, 30*time.Second); err != nil {
		return err
	}
	res.Warnings, res.WarningTexts = warnings(pf.Log())
	// smtp-sink counts a message at its final dot; by the time Postfix
	// has emptied its queue, the sink has also closed the dump file.
	if res.Delivered, res.WithHeader, err = readDumps(sk.dump, c.Header); err != nil {
		return err
	}
	if want := l.Warm + l.N; res.Delivered != want {
		return fmt.Errorf("sink dumped %d messages, want %d", res.Delivered, want)
	}
	if c.Header != "" && res.WithHeader != res.Delivered {
		return fmt.Errorf("%d of %d delivered messages lack %s", res.Delivered-res.WithHeader, res.Delivered, c.Header)
	}
	if m != nil && m.exited() {
		return fmt.Errorf("%s exited during the run; its log:\n%s", c.Program, m.logTail())
	}
	return nil
}

// postfixConfig renders contrib/postfix/main.cf with the milter at spec,
// or without the milter lines when spec is empty.
func (e *env) postfixConfig(spec, relay string) mtalab.PostfixConfig {
	var main strings.Builder
	for _, line := range strings.SplitAfter(e.mainCF, "\n") {
		name, _, _ := strings.Cut(line, "=")
		name = strings.TrimSpace(name)
		if spec == "" && (name == "smtpd_milters" || name == "non_smtpd_milters") {
			continue
		}
		main.WriteString(strings.ReplaceAll(line, contribMilter, spec))
	}
	// The lab's base sets 0s so that tests never wait; an MX runs with
	// Postfix's default, which makes smtpd wait for the queue manager
	// when mail arrives faster than it leaves.
	main.WriteString("\n# contrib/bench: Postfix's default.\nin_flow_delay = 1s\n")
	return mtalab.PostfixConfig{
		Main:  main.String(),
		Relay: relay,
		// Port 25 of an MX offers no AUTH; the lab's plain smtpd does.
		Opts: map[string][]string{mtalab.SMTPService: {"smtpd_sasl_auth_enable=no"}},
	}
}

// send runs smtp-source: n messages over c parallel sessions, one message
// per session, the bench message as its header and body.
func (e *env) send(ctx context.Context, addr string, c, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.smtpSource, "-s", strconv.Itoa(c), "-m", strconv.Itoa(n),
		"-M", "client.example.org", "-f", "alice@example.org", "-t", "bob@example.com",
		"-F", e.message, addr)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("smtp-source -s %d -m %d: %v: %s", c, n, err, bytes.TrimSpace(out))
	}
	return nil
}

// proc is a milter program the bench started.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func (e *env) startMilter(dir string, c config) (*proc, string, error) {
	var spec, network, addr string
	if c.Network == "unix" {
		network, addr = "unix", filepath.Join(dir, "milter.sock")
		spec = "unix:" + addr
	} else {
		a, err := freeAddr()
		if err != nil {
			return nil, "", err
		}
		network, addr = "tcp", a
		spec = "inet:" + addr
	}
	var args []string
	switch c.Program {
	case "replygate":
		cfg := filepath.Join(dir, "replygate.toml")
		if err := os.WriteFile(cfg, []byte(replygateConfig), 0o644); err != nil {
			return nil, "", err
		}
		api, err := freeAddr()
		if err != nil {
			return nil, "", err
		}
		args = []string{e.replygate, "serve", "--config", cfg, "--milter", spec, "--api", api, "--state", filepath.Join(dir, "state")}
	case "nullmilter":
		args = []string{e.nullmilter, "-listen", spec}
	default:
		return nil, "", fmt.Errorf("unknown program %q", c.Program)
	}
	p := &proc{cmd: exec.Command(args[0], args[1:]...), log: filepath.Join(dir, c.Program+".log"), done: make(chan struct{})}
	// A file, not a pipe: nothing in the bench spends CPU reading it.
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, "", err
	}
	defer logf.Close()
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		return nil, "", err
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	if err := waitDial(network, addr, 10*time.Second, p.done); err != nil {
		p.stop()
		return nil, "", fmt.Errorf("%v; its log:\n%s", err, p.logTail())
	}
	return p, spec, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// sink is Postfix's smtp-sink: it dumps every message to a file of its
// own (in memory, under /dev/shm when there is one) and prints running
// counters, which the bench reads to time delivery.
type sink struct {
	cmd  *exec.Cmd
	addr string
	dump string
	done chan struct{}

	mu      sync.Mutex
	n       int       // messages received ("mesg=")
	at      time.Time // when n last grew
	changed chan struct{}
}

func (e *env) startSink() (*sink, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	base := "/dev/shm"
	if fi, err := os.Stat(base); err != nil || !fi.IsDir() {
		base = ""
	}
	dump, err := os.MkdirTemp(base, "replygate-bench-sink-")
	if err != nil {
		return nil, err
	}
	u, err := user.Lookup("postfix")
	if err != nil {
		os.RemoveAll(dump)
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	if err := os.Chown(dump, uid, -1); err != nil {
		os.RemoveAll(dump)
		return nil, err
	}
	s := &sink{addr: addr, dump: dump, done: make(chan struct{}), changed: make(chan struct{})}
	// -c: counters on stdout; -d: one file per message; -u: as root it
	// must drop privileges. The backlog is generous for C=50.
	s.cmd = exec.Command(e.smtpSink, "-c", "-u", "postfix", "-d", filepath.Join(dump, "%H%M%S."), addr, "256")
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dump)
		return nil, err
	}
	var stderr bytes.Buffer
	s.cmd.Stderr = &stderr
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dump)
		return nil, err
	}
	go func() {
		s.read(stdout)
		s.cmd.Wait()
		close(s.done)
	}()
	if err := waitDial("tcp", addr, 10*time.Second, s.done); err != nil {
		s.stop()
		return nil, fmt.Errorf("%v: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return s, nil
}

// read follows smtp-sink's counters, "sess=N quit=N mesg=N" lines ended
// by carriage returns.
func (s *sink) read(r io.Reader) {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\r')
		if _, v, ok := strings.Cut(line, "mesg="); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				now := time.Now()
				s.mu.Lock()
				if n > s.n {
					s.n, s.at = n, now
					close(s.changed)
					s.changed = make(chan struct{})
				}
				s.mu.Unlock()
			}
		}
		if err != nil {
			return
		}
	}
}

// wait returns when the sink has received n messages, with the time the
// n-th arrived.
func (s *sink) wait(ctx context.Context, n int, timeout time.Duration) (time.Time, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		got, at, changed := s.n, s.at, s.changed
		s.mu.Unlock()
		if got >= n {
			return at, nil
		}
		select {
		case <-changed:
		case <-s.done:
			return time.Time{}, fmt.Errorf("smtp-sink exited after %d of %d messages", got, n)
		case <-deadline.C:
			return time.Time{}, fmt.Errorf("the sink got %d of %d messages within %v", got, n, timeout)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

func (s *sink) stop() {
	s.cmd.Process.Kill()
	<-s.done
	os.RemoveAll(s.dump)
}

// readDumps counts the messages in smtp-sink's dump files and those whose
// header section holds the field. Each message starts with the sink's own
// X-Client-Addr record; its header ends at the first empty line.
func readDumps(dir, field string) (msgs, withField int, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	for _, ent := range entries {
		b, err := os.ReadFile(filepath.Join(dir, ent.Name()))
		if err != nil {
			return 0, 0, err
		}
		for _, m := range strings.Split(string(b), "X-Client-Addr: ")[1:] {
			msgs++
			head, _, _ := strings.Cut(m, "\n\n")
			if field != "" && strings.Contains(head, "\n"+field+": ") {
				withField++
			}
		}
	}
	return msgs, withField, nil
}

// waitQueueEmpty polls Postfix's queue directories until no message file
// is left.
func waitQueueEmpty(ctx context.Context, queueDir string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n := 0
		for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold", "corrupt"} {
			filepath.WalkDir(filepath.Join(queueDir, q), func(_ string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					n++
				}
				return nil
			})
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d messages still in Postfix's queue after %v", n, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

var warningRe = regexp.MustCompile(`(?m): (?:warning|error|fatal|panic): (.*)$`)

// warnings counts the warning, error, fatal and panic lines of a Postfix
// log, and returns their texts without duplicates.
func warnings(log string) (int, []string) {
	var texts []string
	seen := map[string]bool{}
	n := 0
	for _, m := range warningRe.FindAllStringSubmatch(log, -1) {
		// Every Postfix process says so at start: the bench's own
		// in_flow_delay line overrides the lab's.
		if strings.Contains(m[1], "overriding earlier entry: in_flow_delay=") {
			continue
		}
		n++
		t := digitsRe.ReplaceAllString(m[1], "N")
		if !seen[t] {
			seen[t] = true
			texts = append(texts, t)
		}
	}
	return n, texts
}

var digitsRe = regexp.MustCompile(`[0-9]+`)

// cpuTime is a process's user plus system time, all its threads, from
// /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s: Linux's
// USER_HZ on every architecture Go supports).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// busyCPU is the time all CPUs spent busy (user, nice, system, irq,
// softirq; not idle, iowait or steal) since boot, from /proc/stat.
func busyCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		ticks += v
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// waitDial polls until network/addr accepts a connection.
func waitDial(network, addr string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s %s: not listening after %v: %w", network, addr, timeout, err)
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before listening on %s", addr)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// freeAddr returns a 127.0.0.1:port that nothing listens on right now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
