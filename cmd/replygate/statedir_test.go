package main

import (
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestServeStateDir: a state directory replygate cannot use stops the
// start with one line naming it, exit status 1, and no socket left behind.
func TestServeStateDir(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // t.TempDir makes both 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "a-file")
	os.WriteFile(file, nil, 0o600)
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o777) // past the umask
	readOnly := filepath.Join(dir, "read-only")
	os.Mkdir(readOnly, 0o755)
	// The store file may be writable when its directory is not: SQLite
	// still needs the directory for its -wal and -shm files.
	os.WriteFile(filepath.Join(readOnly, "replygate.db"), nil, 0o666)

	// Root may write anywhere: the read-only cases run the daemon as
	// nobody, from a copy of the binary nobody may execute.
	var cred *syscall.Credential
	bin := binary
	if os.Getuid() == 0 {
		cred = &syscall.Credential{Uid: 65534, Gid: 65534}
		bin = filepath.Join(dir, "replygate")
		copyFile(t, binary, bin, 0o755)
	} else {
		os.Chmod(readOnly, 0o555)
	}

	tests := []struct {
		name  string
		state string
		cred  *syscall.Credential
		want  string
	}{
		{"a file", file, nil, "state directory: mkdir " + file + ": not a directory"},
		{"under a file", filepath.Join(file, "state"), nil, "not a directory"},
		{"every user may write it", open, nil, "state directory " + open + ": every user may write it (mode 0777)"},
		{"not writable", readOnly, cred, "state directory " + readOnly + ": not writable by uid"},
		{"cannot be created", filepath.Join(readOnly, "sub"), cred, "state directory: mkdir " + filepath.Join(readOnly, "sub") + ": permission denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".sock")
			cmd := exec.Command(bin, "serve", "--state", tt.state, "--milter", "unix:"+sock, "--api", "127.0.0.1:1")
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: tt.cred}
			out, err := cmd.CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Fatalf("serve --state %s: %v (%s), want exit status 1", tt.state, err, out)
			}
			if got := string(out); !strings.Contains(got, tt.want) || strings.Count(got, "\n") != 1 {
				t.Errorf("serve --state %s said %q, want one line containing %q", tt.state, got, tt.want)
			}
			if _, err := os.Lstat(sock); !os.IsNotExist(err) {
				t.Errorf("socket left behind: %v", err)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestServeFileModes starts the daemon under umask 000: every file it
// makes in the state directory is private all the same, and the milter
// socket gets socket_mode, no more.
func TestServeFileModes(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	cfg := filepath.Join(dir, "replygate.toml")
	os.WriteFile(cfg, []byte("[milter]\nsocket_mode = \"0660\"\n"), 0o600)
	sock := filepath.Join(state, "milter.sock")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := ln.Addr().String()
	ln.Close()
	old := syscall.Umask(0)
	d := startDaemon(t, nil, "--config", cfg, "--state", state, "--milter", "unix:"+sock, "--api", api)
	syscall.Umask(old)
	defer func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		<-d.exited
	}()
	want := map[string]os.FileMode{
		".":                0o700 | os.ModeDir,
		"replygate.db":     0o600,
		"replygate.db-wal": 0o600,
		"replygate.db-shm": 0o600,
		"api.sock":         0o600 | os.ModeSocket,
		"milter.sock":      0o660 | os.ModeSocket,
	}
	entries, err := os.ReadDir(state)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range append([]os.DirEntry{nil}, entries...) {
		name := "."
		if e != nil {
			name = e.Name()
		}
		fi, err := os.Lstat(filepath.Join(state, name))
		if err != nil {
			t.Fatal(err)
		}
		seen[name] = true
		got := fi.Mode() & (os.ModePerm | os.ModeDir | os.ModeSocket | os.ModeSymlink)
		if w, ok := want[name]; ok && got != w {
			t.Errorf("%s: mode %v, want %v", name, got, w)
		} else if !ok && got.Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v, want it private to replygate's user", name, got)
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("%s not found in the state directory", name)
		}
	}
}
