// Package integration runs the replygate binary behind real MTAs (Postfix,
// Sendmail) and real milter test tools (miltertest), with the admin lines
// from contrib/ rendered into each MTA's configuration.
package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/replygate/replygate/internal/mtalab"
)

// replygateBin is the binary under test, built once per run by TestMain.
var replygateBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "replygate-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	replygateBin = filepath.Join(dir, "replygate")
	args := []string{"build", "-o", replygateBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "../cmd/replygate")...)
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ../cmd/replygate: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// daemon is a running "replygate serve" with its JSON log.
type daemon struct {
	Milter string // 127.0.0.1:port
	API    string
	Dir    string // state directory and config

	cmd  *exec.Cmd
	done chan struct{}

	mu      sync.Mutex
	lines   []map[string]any
	raw     strings.Builder
	changed chan struct{} // closed and replaced on each new line
}

// startReplygate runs the binary with config (TOML) on free loopback
// ports, waits for its "ready" line, and stops it with SIGTERM when the
// test ends, failing the test if it does not exit 0.
func startReplygate(t testing.TB, config string) *daemon {
	t.Helper()
	d := spawnUnraced(t, func() string { return mtalab.FreeAddr(t) }, config)
	t.Cleanup(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
			d.cmd.Process.Kill()
			<-d.done
			t.Errorf("replygate did not stop within 30s of SIGTERM\n%s", d.Log())
			return
		}
		if code := d.cmd.ProcessState.ExitCode(); code != 0 && !t.Failed() {
			t.Errorf("replygate exited %d after SIGTERM\n%s", code, d.Log())
		}
	})
	d.waitReady(t)
	return d
}

// startKillableReplygate runs replygate on addr for a test that kills it
// with SIGKILL, so its exit status is not checked.
func startKillableReplygate(t testing.TB, addr, config string) *daemon {
	t.Helper()
	d := spawnUnraced(t, func() string { return addr }, config)
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.done
		if t.Failed() {
			t.Logf("replygate log:\n%s", d.Log())
		}
	})
	d.waitReady(t)
	return d
}

// spawnUnraced is spawnReplygate with the milter on addr(), again (up to
// three times) when another process took one of its ports first: a
// port FreeAddr chose is free only when chosen, and in a parallel run
// another test's server, or an outgoing connection's ephemeral port, may
// take it before replygate binds it.
func spawnUnraced(t testing.TB, addr func() string, config string) *daemon {
	t.Helper()
	for attempt := 1; ; attempt++ {
		d := spawnReplygate(t, addr(), config)
		if attempt == 3 || !d.lostPort() {
			return d
		}
		t.Logf("replygate lost a port to another process; again on other ports:\n%s", d.Log())
	}
}

// lostPort waits until d is ready or has exited, and reports whether it
// exited because an address it was to listen on was in use.
func (d *daemon) lostPort() bool {
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		d.mu.Lock()
		lines, changed := append([]map[string]any(nil), d.lines...), d.changed
		d.mu.Unlock()
		if len(filter(lines, "ready")) > 0 {
			return false
		}
		select {
		case <-changed:
		case <-d.done:
			return strings.Contains(d.Log(), "address already in use")
		case <-deadline.C:
			return false // waitReady reports it
		}
	}
}

// spawnReplygate starts the binary with its milter on addr and reads its
// log; the caller decides how it ends.
func spawnReplygate(t testing.TB, addr, config string) *daemon {
	t.Helper()
	return spawnReplygateIn(t, t.TempDir(), addr, config)
}

// spawnReplygateIn is spawnReplygate with the state and config under dir,
// so a restarted daemon finds what the one before it left.
func spawnReplygateIn(t testing.TB, dir, addr, config string) *daemon {
	t.Helper()
	d := &daemon{
		Milter:  addr,
		API:     mtalab.FreeAddr(t),
		Dir:     dir,
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	cfgPath := filepath.Join(d.Dir, "replygate.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(replygateBin, "serve", "--milter", "inet:"+d.Milter, "--api", d.API,
		"--state", filepath.Join(d.Dir, "state"), "--config", cfgPath)
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.read(stderr)
		d.cmd.Wait()
		close(d.done)
	}()
	return d
}

func (d *daemon) waitReady(t testing.TB) {
	t.Helper()
	d.WaitLines(t, 10*time.Second, `"ready"`, func(l []map[string]any) bool { return len(filter(l, "ready")) > 0 })
}

func (d *daemon) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			rec = map[string]any{"msg": "(not JSON)", "text": sc.Text()}
		}
		d.mu.Lock()
		d.raw.WriteString(sc.Text() + "\n")
		d.lines = append(d.lines, rec)
		close(d.changed)
		d.changed = make(chan struct{})
		d.mu.Unlock()
	}
}

// records returns the log records so far.
func (d *daemon) records() []map[string]any {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]map[string]any(nil), d.lines...)
}

// Log is everything the daemon logged so far.
func (d *daemon) Log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.raw.String()
}

// WaitLines waits until ok returns true for the log records so far (or
// the daemon exits), and returns them.
func (d *daemon) WaitLines(t testing.TB, timeout time.Duration, what string, ok func([]map[string]any) bool) []map[string]any {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		d.mu.Lock()
		lines, changed := append([]map[string]any(nil), d.lines...), d.changed
		d.mu.Unlock()
		if ok(lines) {
			return lines
		}
		select {
		case <-changed:
		case <-d.done:
			t.Fatalf("replygate exited before logging %s\n%s", what, d.Log())
		case <-deadline.C:
			t.Fatalf("replygate did not log %s within %v\n%s", what, timeout, d.Log())
		}
	}
}

// Verdicts waits for n "verdict" lines and returns them.
func (d *daemon) Verdicts(t testing.TB, n int, timeout time.Duration) []map[string]any {
	t.Helper()
	lines := d.WaitLines(t, timeout, fmt.Sprintf("%d verdict(s)", n), func(l []map[string]any) bool {
		return len(filter(l, "verdict")) >= n
	})
	return filter(lines, "verdict")
}

func filter(lines []map[string]any, msg string) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}
