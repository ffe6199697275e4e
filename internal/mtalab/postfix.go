package mtalab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Hostname is the private instance's myhostname, and SASLRealm the realm
// its SASL users live in (smtpd_sasl_local_domain): user "jenkins" logs in
// as "jenkins" and reaches a milter as {auth_authen}=jenkins@example.com.
const (
	Hostname  = "lab.example"
	SASLRealm = "example.com"
)

// SMTPService is the name of the lab's own plain smtpd service: AUTH is
// offered, no TLS, relaying for 127.0.0.0/8 and for SASL logins.
const SMTPService = "smtp"

// PostfixConfig is what a test adds to the lab's base instance.
type PostfixConfig struct {
	// Main is appended to the base main.cf, so its settings win (Postfix
	// takes the last value of a parameter): typically the admin's lines
	// from contrib/postfix/main.cf.
	Main string
	// Master holds extra master.cf entries, typically the admin's lines
	// from contrib/postfix/master.cf. Each inet service is moved to a free
	// 127.0.0.1 port (see Postfix.Addr) and every service runs without
	// chroot; nothing else changes.
	Master string
	// Opts appends "-o NAME=VALUE" lines to a master.cf inet service,
	// after its own, so they win: the lab's adaptations (no TLS
	// certificate, …).
	Opts map[string][]string
	// Relay is where all mail goes (host:port), usually Sink.Addr().
	Relay string
	// Users are SASL logins (name → password) in a private sasldb.
	Users map[string]string
}

// Postfix is a running private Postfix instance.
type Postfix struct {
	Dir       string // scratch directory, removed at cleanup
	ConfigDir string // main.cf, master.cf, sasl/smtpd.conf
	QueueDir  string
	LogFile   string // maillog_file

	postfix  string // path of the postfix command
	sendmail string
	addrs    map[string]string // master.cf service name → 127.0.0.1:port
	cmd      *exec.Cmd
	out      lockedBuffer // postfix-script's output (it is terse without a tty)
	done     chan struct{}
	stopOnce sync.Once
	stopErr  error
}

// StartPostfix builds and starts a private instance; it is stopped and
// its directory removed when the test ends. It skips (or fails under
// CI=true) when Postfix, SASL tools or root are missing.
func StartPostfix(t testing.TB, cfg PostfixConfig) *Postfix {
	t.Helper()
	NeedRoot(t)
	Need(t, "postfix", "sendmail", "postconf")
	if len(cfg.Users) > 0 {
		Need(t, "saslpasswd2")
	}
	p, err := newPostfix(cfg)
	if p != nil {
		t.Cleanup(func() {
			if err := p.Stop(); err != nil {
				t.Errorf("stop postfix: %v", err)
			}
			if t.Failed() {
				t.Logf("postfix maillog (%s):\n%s", p.LogFile, p.Log())
			}
			os.RemoveAll(p.Dir)
		})
	}
	if err != nil {
		t.Fatalf("start postfix: %v", err)
	}
	return p
}

// Addr is the 127.0.0.1:port a master.cf inet service listens on, by
// the name it had in the configuration ("smtp" for the lab's own,
// "submission" for contrib's).
func (p *Postfix) Addr(service string) string {
	a, ok := p.addrs[service]
	if !ok {
		panic("mtalab: no inet service " + strconv.Quote(service))
	}
	return a
}

// Log returns the instance's log so far.
func (p *Postfix) Log() string {
	b, _ := os.ReadFile(p.LogFile)
	return string(b)
}

// Sendmail submits a message with the instance's sendmail command, as
// cron or a script would (pickup, then cleanup with non_smtpd_milters).
// It must run as root: set-gid postdrop honours -C only for root.
func (p *Postfix) Sendmail(ctx context.Context, from string, to []string, msg []byte) error {
	args := append([]string{"-C", p.ConfigDir, "-i", "-f", from}, to...)
	cmd := exec.CommandContext(ctx, p.sendmail, args...)
	cmd.Stdin = bytes.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sendmail %v: %v: %s", args, err, bytes.TrimSpace(out))
	}
	return nil
}

// Flush asks the queue manager to retry deferred mail now.
func (p *Postfix) Flush(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, filepath.Join(filepath.Dir(p.postfix), "postqueue"), "-c", p.ConfigDir, "-f").CombinedOutput()
	if err != nil {
		return fmt.Errorf("postqueue -f: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// Queue lists the instance's mail queue as `postqueue -p` prints it;
// an empty queue is "Mail queue is empty".
func (p *Postfix) Queue(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, filepath.Join(filepath.Dir(p.postfix), "postqueue"), "-c", p.ConfigDir, "-p").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("postqueue -p: %v: %s", err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Stop ends the instance: SIGTERM to the master, as `postfix stop` does,
// and `postfix stop` itself if the master does not go away. Safe to call
// more than once.
func (p *Postfix) Stop() error {
	p.stopOnce.Do(func() { p.stopErr = p.stop() })
	return p.stopErr
}

func (p *Postfix) stop() error {
	if p.cmd == nil || p.cmd.Process == nil {
		return nil
	}
	// start-fg runs postfix-script, which runs master in a session of
	// its own: killing the command's process (group) would orphan the
	// master with the ports still open. Signal the master itself.
	if pid, err := p.masterPID(); err == nil {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, p.postfix, "-c", p.ConfigDir, "stop").CombinedOutput()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
	}
	return fmt.Errorf("master ignored SIGTERM; postfix stop: %v %s", err, bytes.TrimSpace(out))
}

func (p *Postfix) masterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(p.QueueDir, "pid", "master.pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// scratchDir makes a directory that Postfix's unprivileged processes
// can traverse: every parent must be searchable by user postfix, which
// rules out t.TempDir() (0700).
func scratchDir() (string, error) {
	base := os.TempDir()
	if !traversable(base) {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "replygate-lab-")
	if err != nil {
		return "", err
	}
	return dir, os.Chmod(dir, 0o755)
}

func traversable(dir string) bool {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

func newPostfix(cfg PostfixConfig) (*Postfix, error) {
	dir, err := scratchDir()
	if err != nil {
		return nil, err
	}
	p := &Postfix{
		Dir:       dir,
		ConfigDir: filepath.Join(dir, "etc"),
		QueueDir:  filepath.Join(dir, "spool"),
		LogFile:   filepath.Join(dir, "log", "maillog"),
		done:      make(chan struct{}),
	}
	if p.postfix, err = LookPath("postfix"); err != nil {
		return p, err
	}
	if p.sendmail, err = LookPath("sendmail"); err != nil {
		return p, err
	}
	for _, d := range []string{p.ConfigDir, filepath.Join(p.ConfigDir, "sasl"), p.QueueDir, filepath.Dir(p.LogFile)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return p, err
		}
	}

	// Ports: the lab's plain smtpd and every inet service of cfg.Master.
	master, addrs, err := RenderMaster(baseMaster+cfg.Master, cfg.Opts, freeAddr)
	if err != nil {
		return p, err
	}
	p.addrs = addrs
	relayHost, relayPort, err := net.SplitHostPort(cfg.Relay)
	if err != nil {
		return p, fmt.Errorf("relay %q: %w", cfg.Relay, err)
	}
	main := fmt.Sprintf(baseMain, p.QueueDir, filepath.Join(dir, "data"), Hostname, relayHost, relayPort, p.LogFile, dir, SASLRealm)
	files := map[string]string{
		filepath.Join(p.ConfigDir, "main.cf"):   main + "\n# From the test:\n" + cfg.Main,
		filepath.Join(p.ConfigDir, "master.cf"): master,
		// Debian's Postfix reads the SASL application config from
		// $config_directory/sasl/, whatever cyrus_sasl_config_path says.
		filepath.Join(p.ConfigDir, "sasl", "smtpd.conf"): fmt.Sprintf(
			"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: %s\n", filepath.Join(dir, "sasldb2")),
	}
	// Postfix rereads a table or main.cf whose mtime is not yet in the
	// past (it might be mid-edit), in 300 ms steps: a file written just
	// now costs ~2 s at start. Date the files a minute back.
	past := time.Now().Add(-time.Minute)
	for name, content := range files {
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			return p, err
		}
		if err := os.Chtimes(name, past, past); err != nil {
			return p, err
		}
	}
	if err := p.addUsers(cfg.Users); err != nil {
		return p, err
	}
	return p, p.start()
}

// addUsers writes the sasldb that smtpd (user postfix) reads.
func (p *Postfix) addUsers(users map[string]string) error {
	if len(users) == 0 {
		return nil
	}
	db := filepath.Join(p.Dir, "sasldb2")
	saslpasswd2, err := LookPath("saslpasswd2")
	if err != nil {
		return err
	}
	names := make([]string, 0, len(users))
	for n := range users {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		cmd := exec.Command(saslpasswd2, "-p", "-f", db, "-c", "-u", SASLRealm, n)
		cmd.Stdin = strings.NewReader(users[n])
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("saslpasswd2 %s: %v: %s", n, err, bytes.TrimSpace(out))
		}
	}
	g, err := user.LookupGroup("postfix")
	if err != nil {
		return err
	}
	gid, _ := strconv.Atoi(g.Gid)
	if err := os.Chown(db, 0, gid); err != nil {
		return err
	}
	return os.Chmod(db, 0o640)
}

func (p *Postfix) start() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// `postfix check` would create the queue and data directories, but
	// it takes seconds (post-install runs postconf over and over); making
	// them as postfix-files says takes microseconds. quick-start then
	// makes postfix-script skip its checks too.
	if err := p.makeQueue(); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(p.QueueDir, "quick-start"), nil, 0o644); err != nil {
		return err
	}
	p.cmd = exec.Command(p.postfix, "-c", p.ConfigDir, "start-fg")
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		return err
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()

	names := make([]string, 0, len(p.addrs))
	for n := range p.addrs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := waitListening(ctx, p.addrs[n], p.done); err != nil {
			// postfix explains itself on stderr only when it is a tty,
			// and a bad main.cf may keep the log from opening: ask
			// `postfix check`, which prints configuration errors.
			check, _ := exec.Command(p.postfix, "-c", p.ConfigDir, "check").CombinedOutput()
			return fmt.Errorf("service %s on %s: %w (postfix: %s; postfix check: %s)\n%s",
				n, p.addrs[n], err, bytes.TrimSpace(p.out.Bytes()), bytes.TrimSpace(check), p.Log())
		}
	}
	return nil
}

// lockedBuffer is a bytes.Buffer that a running command may write while
// the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// makeQueue creates the queue and data directories with the owners and
// modes of Debian's /etc/postfix/postfix-files (mail_owner postfix,
// setgid_group postdrop).
func (p *Postfix) makeQueue() error {
	u, err := user.Lookup("postfix")
	if err != nil {
		return err
	}
	g, err := user.LookupGroup("postdrop")
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(g.Gid)
	dirs := []struct {
		path     string
		uid, gid int
		mode     os.FileMode
	}{
		{filepath.Join(p.Dir, "data"), uid, 0, 0o700},
		{filepath.Join(p.QueueDir, "maildrop"), uid, gid, 0o730},
		{filepath.Join(p.QueueDir, "public"), uid, gid, 0o710},
		{filepath.Join(p.QueueDir, "pid"), 0, 0, 0o755},
	}
	for _, d := range []string{"active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private", "saved", "trace"} {
		dirs = append(dirs, struct {
			path     string
			uid, gid int
			mode     os.FileMode
		}{filepath.Join(p.QueueDir, d), uid, 0, 0o700})
	}
	for _, d := range dirs {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			return err
		}
		if err := os.Chown(d.path, d.uid, d.gid); err != nil {
			return err
		}
		if err := os.Chmod(d.path, d.mode); err != nil { // past the umask
			return err
		}
	}
	return nil
}

// waitListening polls addr until it accepts a connection, the context
// ends, or exited is closed.
func waitListening(ctx context.Context, addr string, exited <-chan struct{}) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not listening: %w", err)
		case <-exited:
			return errors.New("postfix exited before listening")
		case <-tick.C:
		}
	}
}

// WaitListening polls addr (host:port) until it accepts a connection or
// the timeout passes.
func WaitListening(addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return waitListening(ctx, addr, nil)
}

// FreeAddr returns a 127.0.0.1:port that nothing listens on right now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	a, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// RenderMaster moves every inet service of a master.cf to an address
// from addr (as 127.0.0.1:port), turns chroot off for every service, and
// appends "-o" lines from opts after the named inet service's own. It returns
// the text and the address of each inet service by its original name.
func RenderMaster(src string, opts map[string][]string, addr func() (string, error)) (string, map[string]string, error) {
	var out strings.Builder
	addrs := map[string]string{}
	used := map[string]bool{}
	var pending []string
	flush := func() {
		for _, o := range pending {
			fmt.Fprintf(&out, "  -o %s\n", o)
		}
		pending = nil
	}
	for _, line := range strings.Split(strings.TrimRight(src, "\n"), "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") || line[0] == ' ' || line[0] == '\t' {
			out.WriteString(line + "\n")
			continue
		}
		flush()
		f := strings.Fields(line)
		if len(f) < 8 {
			return "", nil, fmt.Errorf("master.cf: %q: want 8 or more fields", line)
		}
		name := f[0]
		if used[name+"/"+f[1]] {
			return "", nil, fmt.Errorf("master.cf: service %s/%s defined twice", name, f[1])
		}
		used[name+"/"+f[1]] = true
		f[4] = "n" // chroot: the lab has no chroot jail
		if f[1] == "inet" {
			a, err := addr()
			if err != nil {
				return "", nil, err
			}
			addrs[name], f[0] = a, a
		}
		if o, ok := opts[name]; ok && f[1] == "inet" {
			pending = o
		}
		out.WriteString(strings.Join(f, " ") + "\n")
	}
	flush()
	for name := range opts {
		if _, ok := addrs[name]; !ok {
			return "", nil, fmt.Errorf("master.cf: no inet service %s for -o lines", name)
		}
	}
	return out.String(), addrs, nil
}

// baseMain is the lab's main.cf: private directories, loopback only, no
// DNS, everything relayed to the sink, a log file, Cyrus SASL from a
// private sasldb. Arguments: queue dir, data dir, hostname, relay, log
// file, log prefix, SASL realm.
const baseMain = `# mtalab: a private Postfix instance for tests.
compatibility_level = 3.6
queue_directory = %s
data_directory = %s
myhostname = %s
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
relayhost = [%s]:%s
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
in_flow_delay = 0s
maillog_file = %s
maillog_file_prefixes = %s
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
smtpd_sasl_local_domain = %s
smtpd_tls_auth_only = no
smtpd_sasl_security_options = noanonymous
`

// baseMaster is Debian's master.cf without chroot, the lab's plain smtpd
// with AUTH, and postlogd for maillog_file.
const baseMaster = `# mtalab: a private Postfix instance for tests.
smtp      inet  n       -       n       -       -       smtpd
  -o smtpd_sasl_auth_enable=yes
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`
