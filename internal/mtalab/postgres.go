package mtalab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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

// Postgres is a private PostgreSQL cluster for one test: its own data
// directory, a free loopback port (below the ephemeral range, so that no
// outgoing connection takes it while the cluster is stopped) and a unix
// socket directory of its own, so that a test may stop, start or crash
// it without touching the server other tests share (127.0.0.1:5432).
//
// Use it for fault tests (the database goes away and comes back); tests
// that only need a database are faster on the shared server with a
// schema of their own.
//
//	pg := mtalab.StartPostgres(t)
//	dsn := pg.DSN()     // postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable
//	pg.Stop(t)          // fast shutdown: clients are disconnected, the port closes
//	pg.Start(t)         // same port, same data
//	pg.Crash(t)         // immediate shutdown: no checkpoint, recovery at the next Start
//
// The cluster trusts every local connection (no password), runs with
// fsync off (a crash of PostgreSQL loses nothing, a crash of the machine
// may: it is a test's scratch cluster), and is stopped and removed when
// the test ends; its log is shown when the test failed.
type Postgres struct {
	Dir       string // scratch directory, removed at cleanup
	DataDir   string // the cluster (PGDATA)
	SocketDir string // unix_socket_directories
	LogFile   string // the server's log
	Port      int    // on 127.0.0.1

	bin  string              // directory of initdb and pg_ctl
	cred *syscall.Credential // whom the programs run as; nil: ourselves

	mu      sync.Mutex
	running bool
}

// pgBinGlob is searched, newest version first, when pg_ctl is not in
// $PATH: Debian and Ubuntu keep the server programs there.
const pgBinGlob = "/usr/lib/postgresql/*/bin"

// postgresBinDir finds the directory holding initdb and pg_ctl.
func postgresBinDir() (string, error) {
	if p, err := LookPath("pg_ctl"); err == nil {
		dir := filepath.Dir(p)
		if real, err := filepath.EvalSymlinks(p); err == nil {
			dir = filepath.Dir(real) // Debian's /usr/local/bin links
		}
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob(pgBinGlob)
	sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) > pgVersion(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("initdb and pg_ctl: not found in $PATH, %v or %s", sbinDirs, pgBinGlob)
}

// pgVersion reads the major version from /usr/lib/postgresql/NN/bin.
func pgVersion(bin string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(bin)))
	return n
}

// StartPostgres initialises a private cluster and starts it. It skips
// the test (or fails it under CI=true, as Need does) when the server
// programs are missing, or when running as root without a "postgres"
// user to run them as (initdb refuses root).
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	bin, err := postgresBinDir()
	if err != nil {
		missing(t, "%v (install postgresql)", err)
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		if cred, err = lookupCredential("postgres"); err != nil {
			missing(t, "PostgreSQL refuses to run as root, and there is no user to run it as: %v", err)
		}
	}
	p, err := newPostgres(bin, cred)
	if p != nil {
		t.Cleanup(func() {
			p.stop("immediate")
			if t.Failed() {
				t.Logf("postgres log (%s):\n%s", p.LogFile, p.Log())
			}
			os.RemoveAll(p.Dir)
		})
	}
	if err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	return p
}

func lookupCredential(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func newPostgres(bin string, cred *syscall.Credential) (*Postgres, error) {
	// Not t.TempDir(): its 0700 parent keeps user postgres out.
	dir, err := scratchDir()
	if err != nil {
		return nil, err
	}
	p := &Postgres{
		Dir:       dir,
		DataDir:   filepath.Join(dir, "data"),
		SocketDir: filepath.Join(dir, "sock"),
		LogFile:   filepath.Join(dir, "postgres.log"),
		bin:       bin,
		cred:      cred,
	}
	if err := os.Mkdir(p.SocketDir, 0o755); err != nil {
		return p, err
	}
	if cred != nil {
		for _, d := range []string{dir, p.SocketDir} {
			if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
				return p, err
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// --no-sync: a scratch cluster need not survive the machine.
	if _, err := p.run(ctx, "initdb", "-D", p.DataDir, "-U", "postgres", "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync"); err != nil {
		return p, err
	}
	// A port is free when chosen and may be taken before the server
	// binds it: try a few.
	for attempt := 1; ; attempt++ {
		if err := p.configure(); err != nil {
			return p, err
		}
		err := p.start(ctx)
		if err == nil {
			return p, nil
		}
		if attempt == 3 || !strings.Contains(p.Log(), "could not bind") {
			return p, err
		}
	}
}

// configure appends the lab's settings to postgresql.conf on a fresh
// free port (PostgreSQL takes the last value of a setting).
func (p *Postgres) configure() error {
	port, err := stablePort()
	if err != nil {
		return err
	}
	p.Port = port
	conf := fmt.Sprintf(`
# mtalab
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
fsync = off
full_page_writes = off
max_connections = 200
log_min_messages = warning
`, p.Port, p.SocketDir)
	f, err := os.OpenFile(filepath.Join(p.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(conf)
	return errors.Join(err, f.Close())
}

// stablePort returns a free loopback port below the kernel's ephemeral
// range when there is room for one: the cluster must get its port back
// at Start, and while it is stopped any outgoing connection of a
// parallel test could take a port from the ephemeral range as its own.
func stablePort() (int, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	const from = 20000
	if low-from >= 1000 {
		for range 100 {
			port := from + rand.IntN(low-from)
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err == nil {
				ln.Close()
				return port, nil
			}
		}
	}
	addr, err := freeAddr()
	if err != nil {
		return 0, err
	}
	_, port, _ := net.SplitHostPort(addr)
	return strconv.Atoi(port)
}

// run runs one of the server programs as the cluster's owner.
func (p *Postgres) run(ctx context.Context, prog string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, prog), args...)
	cmd.Dir = p.Dir // the test's own directory may be closed to user postgres
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGTZ=UTC")
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %v: %s", prog, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// start runs pg_ctl start and waits until the server accepts connections.
func (p *Postgres) start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running {
		return nil
	}
	if _, err := p.run(ctx, "pg_ctl", "start", "-D", p.DataDir, "-l", p.LogFile, "-w", "-t", "60"); err != nil {
		return err
	}
	if err := WaitListening(p.Addr(), 30*time.Second); err != nil {
		return err
	}
	p.running = true
	return nil
}

// stop runs pg_ctl stop in mode (fast or immediate) and waits until the
// server is gone.
func (p *Postgres) stop(mode string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := p.run(ctx, "pg_ctl", "stop", "-D", p.DataDir, "-m", mode, "-w", "-t", "60"); err != nil {
		return err
	}
	p.running = false
	return nil
}

// Addr is the server's 127.0.0.1:port.
func (p *Postgres) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port)) }

// DSN is a URL for database postgres as user postgres over TCP, as
// replygate's store setting takes it. The cluster is the test's own, so
// its default database is free to use.
func (p *Postgres) DSN() string {
	return fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", p.Addr())
}

// Start starts the stopped cluster again, on the same port with the same
// data, and waits until it accepts connections. Starting a running
// cluster does nothing.
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := p.start(ctx); err != nil {
		t.Fatalf("start postgres: %v", err)
	}
}

// Stop shuts the cluster down as an admin would (pg_ctl stop -m fast):
// open sessions are ended, and new connections are refused until Start.
// Stopping a stopped cluster does nothing.
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	if err := p.stop("fast"); err != nil {
		t.Fatalf("stop postgres: %v", err)
	}
}

// Crash ends the cluster as a crash would (pg_ctl stop -m immediate: no
// checkpoint); the next Start recovers from the write-ahead log.
func (p *Postgres) Crash(t testing.TB) {
	t.Helper()
	if err := p.stop("immediate"); err != nil {
		t.Fatalf("crash postgres: %v", err)
	}
}

// Log returns the server's log so far.
func (p *Postgres) Log() string {
	b, _ := os.ReadFile(p.LogFile)
	return string(b)
}
