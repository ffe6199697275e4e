package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/replygate/replygate/internal/siteca"
)

// TestCACLI makes a CA, an admin certificate and a server certificate with
// the subcommands, then checks that the files load, pair up and verify.
func TestCACLI(t *testing.T) {
	state, out := t.TempDir(), t.TempDir()
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		var o, e bytes.Buffer
		code := run(append(append([]string{"ca"}, args...), "--state", state), nil, &o, &e)
		return code, o.String(), e.String()
	}
	caDir := filepath.Join(state, "ca") // the default --dir
	if code, o, e := cli("init"); code != 0 || !strings.Contains(o, caDir) {
		t.Fatalf("ca init = %d %q %q, want 0 naming %s", code, o, e, caDir)
	}
	if code, _, e := cli("init"); code != 1 || !strings.Contains(e, "ca.crt already exists") || strings.Count(e, "\n") != 1 {
		t.Errorf("second ca init = %d %q, want 1 and one line naming ca.crt", code, e)
	}
	ca, err := siteca.Load(caDir)
	if err != nil {
		t.Fatal(err)
	}

	code, o, e := cli("issue", "root@Example.com", "--admin", "--out", out, "--days", "30")
	if code != 0 {
		t.Fatalf("ca issue: exit %d: %s", code, e)
	}
	crt, key := filepath.Join(out, "root@example.com.crt"), filepath.Join(out, "root@example.com.key")
	admin := loadPair(t, crt, key)
	if _, err := admin.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("issued client certificate does not verify: %v", err)
	}
	if admin.EmailAddresses[0] != "root@example.com" || admin.Subject.OrganizationalUnit[0] != siteca.AdminOU {
		t.Errorf("issued admin certificate: SAN %v, subject %s", admin.EmailAddresses, admin.Subject)
	}
	fp := siteca.Fingerprint(admin)
	for _, want := range []string{"wrote " + crt, "wrote " + key, "admin fingerprint: " + fp, "admins = [\"" + fp + "\"]"} {
		if !strings.Contains(o, want) {
			t.Errorf("ca issue --admin printed %q, want it to contain %q", o, want)
		}
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file %s: %v, want mode 0600", key, fi.Mode())
	}
	if code, _, e := cli("issue", "root@example.com", "--out", out); code != 1 || !strings.Contains(e, "already exists") {
		t.Errorf("ca issue over existing files = %d %q, want 1 and 'already exists'", code, e)
	}
	if code, _, e := cli("issue", "root@example.com", "--out", out, "--force"); code != 0 {
		t.Errorf("ca issue --force: exit %d: %s", code, e)
	}
	if again := loadPair(t, crt, key); again.Subject.OrganizationalUnit != nil {
		t.Errorf("ca issue --force without --admin kept %s", again.Subject)
	}

	code, o, e = cli("serve-cert", "api.example.test", "127.0.0.1", "--out", out)
	if code != 0 {
		t.Fatalf("ca serve-cert: exit %d: %s", code, e)
	}
	srv := loadPair(t, filepath.Join(out, "server.crt"), filepath.Join(out, "server.key"))
	for _, host := range []string{"api.example.test", "127.0.0.1"} {
		if _, err := srv.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: host}); err != nil {
			t.Errorf("server certificate for %s: %v", host, err)
		}
	}
	for _, want := range []string{
		`tls_cert = "` + filepath.Join(out, "server.crt") + `"`,
		`tls_key = "` + filepath.Join(out, "server.key") + `"`,
		`client_ca = "` + filepath.Join(caDir, "ca.crt") + `"`,
	} {
		if !strings.Contains(o, want) {
			t.Errorf("ca serve-cert printed %q, want it to contain %q", o, want)
		}
	}

	bad := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"frob"}, 2, "unknown ca command"},
		{[]string{"issue"}, 2, "want one ADDRESS"},
		{[]string{"issue", "Bob <bob@example.com>", "--out", out}, 1, "bare"},
		{[]string{"issue", "a/b@example.com", "--out", out}, 1, "file name"},
		{[]string{"issue", "bob@example.com", "--days", "-1"}, 2, "--days"},
		{[]string{"init", "--admin"}, 2, "-admin"},
		{[]string{"serve-cert"}, 2, "HOST"},
		{[]string{"serve-cert", "bad_host", "--out", out}, 1, "bad_host"},
		{[]string{"issue", "bob@example.com", "--dir", t.TempDir()}, 1, "ca init"},
	}
	for _, tt := range bad {
		code, _, e := cli(tt.args...)
		if code != tt.code || !strings.Contains(e, tt.want) || strings.Count(e, "\n") != 1 {
			t.Errorf("ca %q = %d %q, want %d and one line containing %q", tt.args, code, e, tt.code, tt.want)
		}
	}
}

// loadPair checks that a certificate and key file belong together and
// returns the certificate.
func loadPair(t *testing.T, crt, key string) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		t.Fatalf("load %s and %s: %v", crt, key, err)
	}
	c, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}
