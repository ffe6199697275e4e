package mtalab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// SendmailHostname is the lab Sendmail's host name. Sendmail runs in a
// UTS namespace of its own with this name: with a host name that has no
// dot and no DNS, it sleeps 60 s before every run ("My unqualified host
// name (vm) unknown; sleeping for retry"), a check made before the .cf is
// read, so confDOMAIN_NAME alone does not help.
const SendmailHostname = "mta.lab.example.test"

// SendmailLab is Sendmail 8.17 unpacked from Debian's packages by
// scripts/setup-sendmail, never installed as the system MTA.
type SendmailLab struct {
	Dir      string
	Sendmail string // the sendmail binary (setgid bit dropped)
	M4       string
	CFDir    string // the cf tree that builds sendmail.cf from a .mc
	HelpFile string
	LibPath  string // LD_LIBRARY_PATH for the libraries the box lacked
	Version  string // the Debian version of sendmail-bin
}

var (
	labOnce sync.Once
	lab     *SendmailLab
	labErr  error
)

// NeedSendmail returns the unpacked Sendmail, running scripts/setup-sendmail
// once per test binary (fast when the lab is already there). The lab
// lives in $REPLYGATE_SENDMAIL_LAB, else in the user's cache directory.
// Like Need, it skips the test when Sendmail cannot be had, and fails it
// under CI=true.
func NeedSendmail(t testing.TB) *SendmailLab {
	t.Helper()
	NeedRoot(t)
	Need(t, "unshare", "hostname", "apt-get", "dpkg-deb")
	labOnce.Do(func() { lab, labErr = setupSendmail() })
	if labErr != nil {
		missing(t, "sendmail lab: %v", labErr)
	}
	return lab
}

func setupSendmail() (*SendmailLab, error) {
	dir := os.Getenv("REPLYGATE_SENDMAIL_LAB")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return nil, err
		}
		dir = filepath.Join(cache, "replygate", "sendmail-lab")
	}
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "setup-sendmail"), dir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("scripts/setup-sendmail %s: %v: %s", dir, err, bytes.TrimSpace(stderr.Bytes()))
	}
	l := &SendmailLab{Dir: dir}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "SENDMAIL":
			l.Sendmail = v
		case "M4":
			l.M4 = v
		case "CF_DIR":
			l.CFDir = v
		case "HELP_FILE":
			l.HelpFile = v
		case "LD_LIBRARY_PATH":
			l.LibPath = v
		case "VERSION":
			l.Version = v
		}
	}
	if l.Sendmail == "" || l.M4 == "" || l.CFDir == "" {
		return nil, fmt.Errorf("scripts/setup-sendmail %s: incomplete env:\n%s", dir, out)
	}
	return l, nil
}

// repoRoot is the directory holding go.mod, found from the working
// directory (a test runs in its package's directory).
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
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// SendmailConfig is what a test adds to the lab's base sendmail.mc.
type SendmailConfig struct {
	// Admin holds the lines an admin adds to sendmail.mc, typically
	// contrib/sendmail/replygate.mc. The address of its one
	// INPUT_MAIL_FILTER (S=inet:PORT@HOST) is replaced by Milter; nothing
	// else changes.
	Admin string
	// Milter is the milter's host:port.
	Milter string
	// Relay is where all mail goes (host:port), usually Sink.Addr().
	Relay string
	// Daemons are the names of SMTP listeners for StartDaemon, each on a
	// free 127.0.0.1 port (see Sendmail.Addr): DAEMON_OPTIONS Name=NAME,
	// which a milter sees as {daemon_name}. Sendmail -bs needs none.
	Daemons []string
	// MSP, when set, also builds submit.cf, the mail submission program
	// that Debian's /usr/sbin/sendmail runs for every user: it relays each
	// message over SMTP to the named daemon, as Debian's
	// FEATURE(`msp', `[127.0.0.1]', `25') does (see Sendmail.Submit).
	MSP string
}

// Sendmail is a private Sendmail configuration: its own sendmail.cf,
// queue and files, all under Dir. Each Session runs "sendmail -bs", and
// StartDaemon runs it as a listener.
type Sendmail struct {
	Dir      string
	CF       string // the generated sendmail.cf
	SubmitCF string // the generated submit.cf, when SendmailConfig.MSP is set
	MC       string // the .mc it was built from
	DebugLog string // Sendmail's milter trace (-d64.10); there is no syslog

	lab   *SendmailLab
	addrs map[string]string
}

// milterEquate is the socket equate of an INPUT_MAIL_FILTER line.
var milterEquate = regexp.MustCompile(`S=inet6?:[^,'\x60]+`)

// RenderSendmailMC is the lab's sendmail.mc: every file Sendmail reads or
// writes is under dir, all mail goes to relay, no DNS is needed, and
// delivery is interactive (the end-of-data reply comes after the relay
// took the message). The admin's lines go between the lab's settings and
// the MAILER lines, where an admin puts them, with the milter address
// replaced. daemons maps listener names to 127.0.0.1 ports.
func RenderSendmailMC(cfg SendmailConfig, dir, helpFile string, daemons map[string]string) (string, error) {
	mhost, mport, err := net.SplitHostPort(cfg.Milter)
	if err != nil {
		return "", fmt.Errorf("milter address %q: %v", cfg.Milter, err)
	}
	rhost, rport, err := net.SplitHostPort(cfg.Relay)
	if err != nil {
		return "", fmt.Errorf("relay address %q: %v", cfg.Relay, err)
	}
	if n := len(milterEquate.FindAllString(cfg.Admin, -1)); n != 1 {
		return "", fmt.Errorf("admin lines: want one milter socket S=inet:PORT@HOST, found %d", n)
	}
	admin := milterEquate.ReplaceAllLiteralString(cfg.Admin, "S=inet:"+mport+"@"+mhost)

	var b strings.Builder
	fmt.Fprintf(&b, "divert(-1)\n# replygate test lab: every file Sendmail uses is under %s\ndivert(0)dnl\n", dir)
	b.WriteString("VERSIONID(`replygate sendmail lab')dnl\nOSTYPE(`linux')dnl\n")
	def := func(name, value string) { fmt.Fprintf(&b, "define(`%s', `%s')dnl\n", name, value) }
	def("confDOMAIN_NAME", SendmailHostname)
	def("QUEUE_DIR", filepath.Join(dir, "mqueue"))
	def("STATUS_FILE", filepath.Join(dir, "statistics"))
	def("confPID_FILE", filepath.Join(dir, "sendmail.pid"))
	def("ALIAS_FILE", filepath.Join(dir, "aliases"))
	def("HELP_FILE", helpFile)
	def("confCW_FILE", "-o "+filepath.Join(dir, "local-host-names"))
	def("confCT_FILE", "-o "+filepath.Join(dir, "trusted-users"))
	def("confCR_FILE", "-o "+filepath.Join(dir, "relay-domains"))
	def("confSERVICE_SWITCH_FILE", filepath.Join(dir, "service.switch"))
	def("confDONT_PROBE_INTERFACES", "True")
	def("confTO_IDENT", "0s")
	def("confBIND_OPTS", "-DNSRCH -DEFNAMES")
	def("confAUTH_MECHANISMS", "")
	def("confDELIVERY_MODE", "interactive")
	def("SMART_HOST", "esmtp:["+rhost+"]")
	for _, m := range []string{"ESMTP", "SMTP", "RELAY"} {
		def(m+"_MAILER_ARGS", "TCP $h "+rport)
	}
	b.WriteString("FEATURE(`nocanonify')dnl\nFEATURE(`accept_unresolvable_domains')dnl\nFEATURE(`accept_unqualified_senders')dnl\n")
	// Only the listeners asked for, on loopback: without this the cf adds
	// an MSA on port 587 of every address, which concurrent tests (and
	// the host) would fight over.
	b.WriteString("FEATURE(`no_default_msa')dnl\n")
	for _, n := range slices.Sorted(maps.Keys(daemons)) {
		_, port, err := net.SplitHostPort(daemons[n])
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "DAEMON_OPTIONS(`Family=inet, Name=%s, Addr=127.0.0.1, Port=%s')dnl\n", n, port)
	}
	b.WriteString("dnl --- the admin's lines ---\n")
	b.WriteString(strings.TrimRight(admin, "\n") + "\n")
	b.WriteString("dnl --- end of the admin's lines ---\n")
	b.WriteString("MAILER(`local')dnl\nMAILER(`smtp')dnl\n")
	return b.String(), nil
}

// NewSendmail builds a private Sendmail configuration in a scratch
// directory removed when the test ends. It skips (or fails under CI=true)
// when Sendmail cannot be had.
func NewSendmail(t testing.TB, cfg SendmailConfig) *Sendmail {
	t.Helper()
	l := NeedSendmail(t)
	s := &Sendmail{Dir: t.TempDir(), lab: l, addrs: make(map[string]string)}
	for _, n := range cfg.Daemons {
		s.addrs[n] = FreeAddr(t)
	}
	mc, err := RenderSendmailMC(cfg, s.Dir, l.HelpFile, s.addrs)
	if err != nil {
		t.Fatalf("sendmail.mc: %v", err)
	}
	s.MC = mc
	s.CF = filepath.Join(s.Dir, "sendmail.cf")
	s.DebugLog = filepath.Join(s.Dir, "debug.log")
	if err := s.build(); err != nil {
		t.Fatalf("sendmail.cf: %v\nsendmail.mc:\n%s", err, mc)
	}
	if cfg.MSP != "" {
		if err := s.buildMSP(t, s.Addr(cfg.MSP)); err != nil {
			t.Fatalf("submit.cf: %v", err)
		}
	}
	return s
}

// buildMSP makes submit.cf from Sendmail's own submit.mc settings and
// FEATURE(`msp'), relaying to mta (127.0.0.1:port). The program must run
// as a user other than root (Debian's smmsp; the lab has no such user,
// so nobody), which must reach its files: they live in a scratch
// directory of their own, as t.TempDir() is not searchable by others.
func (s *Sendmail) buildMSP(t testing.TB, mta string) error {
	_, port, err := net.SplitHostPort(mta)
	if err != nil {
		return err
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return err
	}
	dir, err := scratchDir()
	if err != nil {
		return err
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	q := filepath.Join(dir, "clientmqueue")
	mc := strings.Join([]string{
		"divert(0)dnl",
		"VERSIONID(`replygate sendmail lab MSP')dnl",
		"define(`confCF_VERSION', `Submit')dnl",
		"define(`__OSTYPE__',`')dnl",
		"define(`confTIME_ZONE', `USE_TZ')dnl",
		"define(`confDONT_INIT_GROUPS', `True')dnl",
		"define(`confDOMAIN_NAME', `" + SendmailHostname + "')dnl",
		"define(`confBIND_OPTS', `-DNSRCH -DEFNAMES')dnl",
		"define(`confRUN_AS_USER', `nobody')dnl",
		"define(`MSP_QUEUE_DIR', `" + q + "')dnl",
		"define(`confCT_FILE', `-o " + filepath.Join(dir, "trusted-users") + "')dnl",
		"define(`confSERVICE_SWITCH_FILE', `" + filepath.Join(dir, "service.switch") + "')dnl",
		"define(`RELAY_MAILER_ARGS', `TCP $h " + port + "')dnl",
		"FEATURE(`accept_unresolvable_domains')dnl",
		"FEATURE(`msp', `[127.0.0.1]')dnl",
		"",
	}, "\n")
	mcPath := filepath.Join(dir, "submit.mc")
	if err := os.WriteFile(mcPath, []byte(mc), 0o644); err != nil {
		return err
	}
	cf, err := s.m4(mcPath)
	if err != nil {
		return err
	}
	s.SubmitCF = filepath.Join(dir, "submit.cf")
	if err := os.WriteFile(s.SubmitCF, cf, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "service.switch"), []byte("hosts files\naliases files\n"), 0o644); err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Mkdir(q, 0o770); err != nil {
		return err
	}
	return os.Chown(q, uid, gid)
}

func (s *Sendmail) m4(mcPath string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.Command(s.lab.M4, "-D_CF_DIR_="+s.lab.CFDir+"/", filepath.Join(s.lab.CFDir, "m4", "cf.m4"), mcPath)
	cmd.Stderr = &stderr
	cf, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		return nil, fmt.Errorf("m4 %s: %v: %s", mcPath, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return cf, nil
}

// Submit hands msg to the mail submission program as a cron job or a
// bug tracker does ("sendmail -i -f FROM -- TO..." on standard input),
// which relays it over SMTP to the MSP daemon (SendmailConfig.MSP). It
// returns once the MSP is done: its delivery mode is interactive.
func (s *Sendmail) Submit(ctx context.Context, from string, to []string, msg []byte) error {
	if s.SubmitCF == "" {
		return errors.New("sendmail: no MSP configured")
	}
	cmd := s.commandCF(ctx, s.SubmitCF, append([]string{"-i", "-f", from, "--"}, to...)...)
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("sendmail -C submit.cf: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

func (s *Sendmail) build() error {
	mcPath := filepath.Join(s.Dir, "sendmail.mc")
	if err := os.WriteFile(mcPath, []byte(s.MC), 0o644); err != nil {
		return err
	}
	cf, err := s.m4(mcPath)
	if err != nil {
		return err
	}
	files := map[string]string{
		"sendmail.cf":      string(cf),
		"aliases":          "",
		"local-host-names": "",
		"statistics":       "",
		"service.switch":   "hosts files\naliases files\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(s.Dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return os.Mkdir(filepath.Join(s.Dir, "mqueue"), 0o700)
}

// Addr is the 127.0.0.1:port of the named daemon (SendmailConfig.Daemons).
func (s *Sendmail) Addr(name string) string {
	a, ok := s.addrs[name]
	if !ok {
		panic("mtalab: no sendmail daemon named " + name)
	}
	return a
}

// Log is Sendmail's debug trace so far: the milter conversation.
func (s *Sendmail) Log() string {
	b, err := os.ReadFile(s.DebugLog)
	if err != nil {
		return "(no sendmail debug log: " + err.Error() + ")"
	}
	return string(b)
}

// command runs sendmail with args in a UTS namespace named
// SendmailHostname, tracing the milter conversation to DebugLog.
func (s *Sendmail) command(args ...string) *exec.Cmd {
	return s.commandCF(context.Background(), s.CF, args...)
}

// commandCF is command with another .cf; ctx's end kills the process
// group.
func (s *Sendmail) commandCF(ctx context.Context, cf string, args ...string) *exec.Cmd {
	// -D must come before -d. -C makes it read our .cf (root may).
	script := `hostname "$1" && shift && exec "$@"`
	argv := append([]string{"--uts", "sh", "-c", script, "sh", SendmailHostname,
		s.lab.Sendmail, "-C", cf, "-D", s.DebugLog, "-d64.10"}, args...)
	cmd := exec.CommandContext(ctx, "unshare", argv...)
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+s.lab.LibPath)
	cmd.Dir = s.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

// SendmailSession is one "sendmail -bs" run: an SMTP session on the
// program's standard input and output, as a local submission (no client
// socket) would be. Several messages may go over it.
type SendmailSession struct {
	*Client
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan struct{}
}

// Session starts "sendmail -bs" and says EHLO client.example, waiting for
// each reply (Sendmail refuses a client that talks before its turn). It
// is ended when the test ends, if the test has not quit.
func (s *Sendmail) Session(t testing.TB) *SendmailSession {
	t.Helper()
	ss, err := s.session()
	if err != nil {
		t.Fatalf("sendmail -bs: %v", err)
	}
	t.Cleanup(func() {
		ss.Close()
		if err := ss.wait(10 * time.Second); err != nil {
			t.Errorf("sendmail -bs: %v\n%s", err, ss.stderr.String())
		}
	})
	if err := ss.Hello("client.example"); err != nil {
		t.Fatalf("sendmail -bs: EHLO: %v\n%s\n%s", err, ss.stderr.String(), s.Log())
	}
	return ss
}

func (s *Sendmail) session() (*SendmailSession, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	ss := &SendmailSession{cmd: s.command("-bs"), done: make(chan struct{})}
	ss.cmd.Stdin, ss.cmd.Stdout, ss.cmd.Stderr = inR, outW, &ss.stderr
	err = ss.cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, err
	}
	go func() {
		ss.cmd.Wait()
		close(ss.done)
	}()
	c := smtp.NewClient(&pipeConn{r: outR, w: inW})
	c.CommandTimeout = 30 * time.Second
	c.SubmissionTimeout = 60 * time.Second
	ss.Client = &Client{c}
	return ss, nil
}

// wait waits for the program to exit, killing its process group after
// timeout.
func (ss *SendmailSession) wait(timeout time.Duration) error {
	select {
	case <-ss.done:
		return nil
	case <-time.After(timeout):
		syscall.Kill(-ss.cmd.Process.Pid, syscall.SIGKILL)
		<-ss.done
		return fmt.Errorf("did not exit within %v of end of input; killed", timeout)
	}
}

// sendmailQueuedRe matches Sendmail's end-of-data reply:
// "2.0.0 5AP1x2Yz012345 Message accepted for delivery".
var sendmailQueuedRe = regexp.MustCompile(`^(?:\d\.\d+\.\d+ )?([0-9A-Za-z]+) Message accepted`)

// Send runs one mail transaction and returns the queue id from
// Sendmail's "250 2.0.0 ID Message accepted for delivery".
func (ss *SendmailSession) Send(from string, to []string, msg []byte) (string, error) {
	if err := ss.Mail(from, nil); err != nil {
		return "", fmt.Errorf("MAIL FROM:<%s>: %w", from, err)
	}
	for _, r := range to {
		if err := ss.Rcpt(r, nil); err != nil {
			return "", fmt.Errorf("RCPT TO:<%s>: %w", r, err)
		}
	}
	w, err := ss.Data()
	if err != nil {
		return "", fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return "", fmt.Errorf("DATA: %w", err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", fmt.Errorf("end of DATA: %w", err)
	}
	if m := sendmailQueuedRe.FindStringSubmatch(resp.StatusText); m != nil {
		return m[1], nil
	}
	return "", fmt.Errorf("end of DATA: no queue id in %q", resp.StatusText)
}

// StartDaemon runs Sendmail as a listener on every SendmailConfig.Daemons
// address ("sendmail -bD", in the foreground) and waits until each
// accepts connections. It is stopped when the test ends.
func (s *Sendmail) StartDaemon(t testing.TB) {
	t.Helper()
	if len(s.addrs) == 0 {
		t.Fatal("sendmail -bD: no daemons configured")
	}
	var out bytes.Buffer
	cmd := s.command("-bD")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("sendmail -bD: %v", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		// The daemon forks a child per connection; they share its
		// process group.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			t.Errorf("sendmail -bD did not stop within 10s of SIGTERM")
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for name, addr := range s.addrs {
		if err := waitListening(ctx, addr, done); err != nil {
			t.Fatalf("sendmail -bD: daemon %s on %s: %v\n%s\n%s", name, addr, err, out.String(), s.Log())
		}
	}
}

// pipeConn is a net.Conn over the pipes to a child's standard input and
// output. os.File pipes honour deadlines, so go-smtp's timeouts work.
type pipeConn struct {
	r *os.File // the child's stdout
	w *os.File // the child's stdin
}

func (p *pipeConn) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p *pipeConn) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p *pipeConn) Close() error                { return errors.Join(p.w.Close(), p.r.Close()) }
func (p *pipeConn) LocalAddr() net.Addr         { return pipeAddr{} }
func (p *pipeConn) RemoteAddr() net.Addr        { return pipeAddr{} }
func (p *pipeConn) SetDeadline(t time.Time) error {
	return errors.Join(p.r.SetDeadline(t), p.w.SetDeadline(t))
}
func (p *pipeConn) SetReadDeadline(t time.Time) error  { return p.r.SetReadDeadline(t) }
func (p *pipeConn) SetWriteDeadline(t time.Time) error { return p.w.SetWriteDeadline(t) }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "sendmail -bs" }

// SendmailQueueID returns the queue id Sendmail assigned to a message,
// read from the topmost Received field it added:
// "by mta.lab.example.test (8.17.1.9/8.17.1.9/Debian-2+deb12u2) with ESMTP id 5AP1x2Yz012345".
func SendmailQueueID(m Message) string {
	rs := m.Values("Received")
	if len(rs) == 0 {
		return ""
	}
	if sm := sendmailReceivedRe.FindStringSubmatch(rs[0]); sm != nil {
		return sm[1]
	}
	return ""
}

var sendmailReceivedRe = regexp.MustCompile(`\(8\.[0-9./A-Za-z+-]+\) +with E?SMTPS?A? +id ([0-9A-Za-z]+)`)
