package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/replygate/replygate/internal/corpus"
)

// binary is replygate built once for the tests that run it as a process.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "replygate-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "replygate")
	if out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build replygate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// checkArgs turns a case envelope into `replygate check` flags.
func checkArgs(c corpus.Case) []string {
	e := c.Envelope
	args := []string{"check", "--json", "--mail-from", e.MailFrom}
	for _, r := range e.Rcpt {
		args = append(args, "--rcpt", r)
		for _, a := range e.Aliases[r] {
			args = append(args, "--alias", r+"="+a)
		}
	}
	if e.Auth != "" {
		args = append(args, "--auth", e.Auth)
	}
	if e.ClientIP != "" {
		args = append(args, "--client-ip", e.ClientIP)
	}
	if e.Daemon != "" {
		args = append(args, "--daemon", e.Daemon)
	}
	if e.Local {
		args = append(args, "--local")
	}
	if e.Outbound {
		args = append(args, "--outbound")
	}
	return args
}

// TestCheckMatchesGolden runs `check --json` on every corpus message and
// compares the output byte for byte with the golden file that the policy
// tests hold: the command and the classifier cannot drift apart.
func TestCheckMatchesGolden(t *testing.T) {
	msgs, err := corpus.Load("../../testdata/messages")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		var stdout, stderr bytes.Buffer
		if code := run(append(checkArgs(m.Case), m.EML), nil, &stdout, &stderr); code != 0 {
			t.Errorf("check %s: exit %d: %s", m.EML, code, stderr.String())
			continue
		}
		want, err := os.ReadFile(m.Golden)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(stdout.Bytes(), want) {
			t.Errorf("check %s printed\n%s\nwant %s\n%s", m.EML, stdout.Bytes(), m.Golden, want)
		}
	}
}

func TestCheckContract(t *testing.T) {
	msg := "Return-Path: <MAILER-DAEMON@mx.example.org>\nFrom: Mail Delivery System <MAILER-DAEMON@mx.example.org>\n" +
		"To: bob@example.com\nSubject: Undelivered Mail\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\n"
	tests := []struct {
		name   string
		args   []string
		stdin  string
		code   int
		stdout []string // substrings of stdout
		stderr string   // substring of stderr
	}{
		{"null sender from flag", []string{"check", "--json", "--mail-from", "<>", "--rcpt", "bob@example.com", "-"}, msg, 0,
			[]string{`"auto_reply": "suppress"`, `"null-sender"`, `"report"`}, ""},
		{"empty mail-from is null", []string{"check", "--json", "--mail-from", ""}, msg, 0, []string{`"null-sender"`}, ""},
		{"return-path when no mail-from", []string{"check", "--json"}, msg, 0, []string{`"system-sender"`, `"report"`}, ""},
		{"flags after file", []string{"check", "-", "--json", "--outbound", "--mail-from", ""}, msg, 0,
			[]string{`"stamp": true`, `"name": "X-Allow-Auto-Reply"`, `"value": "no"`}, ""},
		{"text output", []string{"check", "--mail-from", "alice@example.org", "--rcpt", "bob@example.com"}, "To: bob@example.com\n\nhi\n", 0,
			[]string{"auto_reply: allow", "stamp: false"}, ""},
		{"unreadable file", []string{"check", "/nonexistent/mail.eml"}, "", 1, nil, "no such file"},
		{"empty input", []string{"check", "--json"}, "", 1, nil, "empty input"},
		{"bad flag", []string{"check", "--frobnicate"}, "", 2, nil, "frobnicate"},
		{"bad client ip", []string{"check", "--client-ip", "300.1.1.1"}, msg, 2, nil, "--client-ip"},
		{"alias without rcpt", []string{"check", "--alias", "a@example.com=b@example.com"}, msg, 2, nil, "--alias"},
		{"two files", []string{"check", "a.eml", "b.eml"}, "", 2, nil, "one message at a time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, strings.NewReader(tt.stdin), &stdout, &stderr)
			if code != tt.code {
				t.Errorf("run(%q) = %d, want %d (stderr %q)", tt.args, code, tt.code, stderr.String())
			}
			for _, s := range tt.stdout {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("run(%q) stdout lacks %q:\n%s", tt.args, s, stdout.String())
				}
			}
			if tt.stderr != "" && (!strings.Contains(stderr.String(), tt.stderr) || strings.Count(stderr.String(), "\n") != 1) {
				t.Errorf("run(%q) stderr = %q, want one line containing %q", tt.args, stderr.String(), tt.stderr)
			}
			if tt.code == 0 && strings.Contains(tt.args[1], "json") && !json.Valid(stdout.Bytes()) {
				t.Errorf("run(%q) printed invalid JSON", tt.args)
			}
		})
	}
}

// daemon is a running `replygate serve`.
type daemon struct {
	cmd    *exec.Cmd
	ready  map[string]any // the "ready" log line
	stderr *lockedBuffer
	exited chan error
}

// lockedBuffer is the daemon's stderr, written by the reader goroutine
// while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startDaemon runs the binary and waits for its ready line (never a
// guessed sleep).
func startDaemon(t *testing.T, env []string, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, stderr: &lockedBuffer{}, exited: make(chan error, 1)}
	readyc := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			d.stderr.Write(append(sc.Bytes(), '\n'))
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == "ready" {
				readyc <- rec
			}
		}
	}()
	go func() { d.exited <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	select {
	case d.ready = <-readyc:
	case err := <-d.exited:
		t.Fatalf("replygate serve exited before ready: %v\n%s", err, d.stderr)
	case <-time.After(20 * time.Second):
		t.Fatalf("replygate serve not ready after 20s:\n%s", d.stderr)
	}
	return d
}

// TestServeZeroConfig starts `replygate serve` with no arguments and no
// config file, as the README says, and talks to it as an MTA would.
func TestServeZeroConfig(t *testing.T) {
	home := t.TempDir()
	d := startDaemon(t, []string{"HOME=" + home, "XDG_STATE_HOME=", "STATE_DIRECTORY=", "NOTIFY_SOCKET="})
	if d.ready["milter"] != "inet:127.0.0.1:8894" || d.ready["api"] != "http://127.0.0.1:8895" {
		t.Errorf("ready line %v: want the default listeners", d.ready)
	}
	if fi, err := os.Stat(filepath.Join(home, ".local/state/replygate")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state directory: %v %v, want a 0700 directory", fi, err)
	}

	c := gomilter.NewClientWithOptions("tcp", "127.0.0.1:8894", gomilter.ClientOptions{
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, ActionMask: gomilter.OptAddHeader})
	s, err := c.Session()
	if err != nil {
		t.Fatalf("milter session: %v", err)
	}
	defer s.Close()
	for _, step := range []func() error{
		func() error { return s.Macros(gomilter.CodeMail, "{daemon_name}", "ORIGINATING") },
		func() error { _, err := s.Mail("<>", nil); return err },
		func() error { _, err := s.Rcpt("<someone@example.net>", nil); return err },
		func() error { _, err := s.HeaderField("Subject", "build failed"); return err },
		func() error { _, err := s.HeaderEnd(); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("milter client: %v", err)
		}
	}
	mods, act, err := s.End()
	if err != nil || act.Code != gomilter.ActAccept {
		t.Fatalf("End = %v, %v; want accept", act, err)
	}
	var stamped bool
	for _, m := range mods {
		stamped = stamped || m.HeaderName == "X-Allow-Auto-Reply" && m.HeaderValue == "no"
	}
	if !stamped {
		t.Errorf("outbound null-sender mail not stamped: %v", mods)
	}

	resp, err := http.Get("http://127.0.0.1:8895/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("GET /healthz = %v, %v", resp, err)
	} else {
		resp.Body.Close()
	}

	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		if err != nil {
			t.Errorf("replygate serve after SIGTERM: %v, want exit 0\n%s", err, d.stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("replygate serve still running 10s after SIGTERM")
	}
	if !strings.Contains(d.stderr.String(), `"msg":"verdict"`) {
		t.Errorf("no verdict log line:\n%s", d.stderr)
	}
}

func TestServeUnixSocketAndFlags(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "milter.sock")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	api := ln.Addr().String()
	ln.Close()
	d := startDaemon(t, nil, "--milter", "unix:"+sock, "--api", api, "--state", filepath.Join(dir, "state"))
	if d.ready["milter"] != "unix:"+sock {
		t.Errorf("ready line %v, want milter unix:%s", d.ready, sock)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o666 {
		t.Errorf("socket %v %v, want mode 0666 (the MTA's user must connect)", fi, err)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-d.exited; err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind after exit: %v", err)
	}
}

func TestServeRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, file string
		args       []string
		want       string
	}{
		{"unknown key", "[milter]\nlisten_on = \"inet:127.0.0.1:1\"\n", nil, "unknown key milter.listen_on"},
		{"bad value", "[milter]\nfail_action = \"bounce\"\n", nil, "milter.fail_action"},
		{"bad flag value", "", []string{"--milter", "inet:localhost"}, "milter.listen"},
		{"public api without tls", "", []string{"--api", "0.0.0.0:18895", "--milter", "unix:" + filepath.Join(dir, "x.sock")}, "beyond loopback"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "c.toml")
			os.WriteFile(path, []byte(tt.file), 0o600)
			args := append([]string{"serve", "--config", path, "--state", filepath.Join(dir, "state")}, tt.args...)
			out, err := exec.Command(binary, args...).CombinedOutput()
			if err == nil {
				t.Fatalf("serve with %s exited 0", tt.name)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Errorf("serve with %s said %q, want it to name %q", tt.name, out, tt.want)
			}
		})
	}
}
