package mtalab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// sbinDirs are searched after $PATH: postfix, postconf and sendmail live
// in /usr/sbin, which a non-root $PATH often lacks.
var sbinDirs = []string{"/usr/sbin", "/sbin", "/usr/local/sbin"}

// LookPath finds a program in $PATH or the sbin directories.
func LookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range sbinDirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in $PATH or %v", name, sbinDirs)
}

// Need skips the test when one of the programs is not installed, and
// fails it when the environment variable CI is "true": in CI a missing
// program is a broken setup (scripts/install-test-deps), not a reason to
// pass.
func Need(t testing.TB, programs ...string) {
	t.Helper()
	for _, p := range programs {
		if _, err := LookPath(p); err != nil {
			missing(t, "%v (scripts/install-test-deps installs it)", err)
		}
	}
}

// NeedRoot skips (or fails under CI=true) when not running as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "needs root (a private Postfix instance and its sendmail command run as root)")
	}
}

func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: "+format, args...)
	}
	t.Skipf(format, args...)
}
