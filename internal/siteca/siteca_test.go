package siteca

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// newCA makes a CA in a temp dir with Init and loads it back.
func newCA(t *testing.T) (*CA, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	if err := Init(dir, Options{}); err != nil {
		t.Fatalf("Init: %v", err)
	}
	ca, err := Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return ca, dir
}

func parse(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(certPEM)
	if blk == nil {
		t.Fatalf("no PEM in %q", certPEM)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func verifyClient(ca *CA, c *x509.Certificate) error {
	_, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

func TestCAInitFiles(t *testing.T) {
	ca, dir := newCA(t)
	for name, want := range map[string]fs.FileMode{".": 0o700, CertFile: 0o644, KeyFile: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %s = %o, want %o", name, got, want)
		}
	}
	if !ca.Cert.IsCA || time.Until(ca.Cert.NotAfter) < (DefaultCADays-1)*24*time.Hour {
		t.Errorf("CA IsCA=%v NotAfter=%v, want a CA valid ~%d days", ca.Cert.IsCA, ca.Cert.NotAfter, DefaultCADays)
	}
	if ca.Cert.SerialNumber.BitLen() < 64 {
		t.Errorf("CA serial %v: want a random 128-bit serial", ca.Cert.SerialNumber)
	}
	key, _ := os.ReadFile(filepath.Join(dir, KeyFile))
	if !strings.HasPrefix(string(key), "-----BEGIN PRIVATE KEY-----") {
		t.Errorf("%s is not PKCS#8 PEM: %.40q", KeyFile, key)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}

	err := Init(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, CertFile)) {
		t.Errorf("second Init = %v, want a refusal naming %s", err, CertFile)
	}
	again, err := Load(dir)
	if err != nil || !again.Cert.Equal(ca.Cert) {
		t.Errorf("the refused Init changed the CA (err %v)", err)
	}
	if err := Init(dir, Options{Force: true}); err != nil {
		t.Fatalf("Init with Force: %v", err)
	}
	if again, err := Load(dir); err != nil || again.Cert.Equal(ca.Cert) {
		t.Errorf("Init with Force kept the old CA (err %v)", err)
	}
	if _, err := Load(t.TempDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(empty dir) = %v, want fs.ErrNotExist", err)
	}
}

func TestCALoadMismatchedKey(t *testing.T) {
	_, dir := newCA(t)
	_, other := newCA(t)
	key, _ := os.ReadFile(filepath.Join(other, KeyFile))
	os.WriteFile(filepath.Join(dir, KeyFile), key, 0o600)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Errorf("Load with another CA's key = %v, want 'does not belong'", err)
	}
}

func TestCAIssueClient(t *testing.T) {
	ca, _ := newCA(t)
	untrusted, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		ca      *CA
		address string
		admin   bool
		opt     Options
		wantErr string // from Verify; "" = verifies
	}{
		{"user", ca, "bob@Example.COM", false, Options{}, ""},
		{"admin", ca, "root@example.com", true, Options{Days: 30}, ""},
		{"untrusted CA", untrusted, "bob@example.com", false, Options{}, "unknown authority"},
		{"expired", ca, "bob@example.com", false,
			Options{Days: 1, Now: func() time.Time { return time.Now().AddDate(0, 0, -30) }}, "expired"},
	}
	for _, tt := range tests {
		certPEM, keyPEM, err := tt.ca.IssueClient(tt.address, tt.admin, tt.opt)
		if err != nil {
			t.Fatalf("IssueClient(%s): %v", tt.name, err)
		}
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			t.Errorf("IssueClient(%s): key does not match the certificate: %v", tt.name, err)
		}
		c := parse(t, certPEM)
		err = verifyClient(ca, c)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("Verify(%s) = %v, want %q", tt.name, err, tt.wantErr)
		}
		want := strings.ToLower(tt.address) // the test addresses have lower-case local parts
		if len(c.EmailAddresses) != 1 || c.EmailAddresses[0] != want || c.Subject.CommonName != want {
			t.Errorf("IssueClient(%s): SAN %v CN %q, want %s", tt.name, c.EmailAddresses, c.Subject.CommonName, want)
		}
		if len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || c.IsCA {
			t.Errorf("IssueClient(%s): ExtKeyUsage %v IsCA %v, want client auth only", tt.name, c.ExtKeyUsage, c.IsCA)
		}
		isAdmin := len(c.Subject.OrganizationalUnit) == 1 && c.Subject.OrganizationalUnit[0] == AdminOU
		if isAdmin != tt.admin {
			t.Errorf("IssueClient(%s): subject %s, admin OU %v, want %v", tt.name, c.Subject, isAdmin, tt.admin)
		}
		if tt.name == "admin" && c.Subject.String() != "CN=root@example.com,OU=replygate-admin" {
			t.Errorf("admin subject = %q", c.Subject.String())
		}
		if fp := Fingerprint(c); len(fp) != len("sha256:")+64 || !strings.HasPrefix(fp, "sha256:") || strings.ToLower(fp) != fp {
			t.Errorf("Fingerprint = %q, want sha256: and 64 lower-case hex digits", fp)
		}
		if tt.name == "admin" && c.NotAfter.Sub(c.NotBefore) > 31*24*time.Hour {
			t.Errorf("Days: 30 made a certificate valid %v", c.NotAfter.Sub(c.NotBefore))
		}
	}
	// A client certificate is not a server certificate.
	certPEM, _, _ := ca.IssueClient("bob@example.com", false, Options{})
	if _, err := parse(t, certPEM).Verify(x509.VerifyOptions{Roots: ca.Pool()}); err == nil {
		t.Error("a client certificate verified for server auth")
	}
}

func TestCAParseAddress(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{"bob@example.com", "bob@example.com", ""},
		{"Bob.Smith@EXAMPLE.com", "Bob.Smith@example.com", ""}, // local part kept
		{"a@b\r\nX: y", "", "control characters"},
		{"not an address", "", "not a bare address"},
		{"Name <a@b>", "", "want the bare address a@b"},
		{"<a@b>", "", "want the bare address a@b"},
		{`"a b"@example.com`, "", "quotes"},
		{`"ab"@example.com`, "", "quotes"},
		{"bob@exämple.com", "", "ASCII"},
		{"bob", "", "address"},
		{"", "", "address"},
		{"a@b,c@d", "", "address"},
	}
	for _, tt := range tests {
		got, err := ParseAddress(tt.in)
		if tt.wantErr == "" && (err != nil || got != tt.want) {
			t.Errorf("ParseAddress(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
		}
		if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("ParseAddress(%q) = %q, %v, want an error containing %q", tt.in, got, err, tt.wantErr)
		}
	}
	ca, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.IssueClient("a@b\r\nX: y", false, Options{}); err == nil {
		t.Error("IssueClient took an address with CR LF")
	}
}

func TestCAIssueServerBadHosts(t *testing.T) {
	ca, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, hosts := range [][]string{nil, {""}, {"a..b"}, {"-a.example"}, {"a b"}, {"a_b.example"}, {"ok.example", "x/y"}} {
		if _, _, err := ca.IssueServer(hosts, Options{}); err == nil {
			t.Errorf("IssueServer(%q) succeeded, want an error", hosts)
		}
	}
	if _, _, err := ca.IssueClient("bob@example.com", false, Options{Days: -1}); err == nil {
		t.Error("IssueClient with Days -1 succeeded")
	}
}

// TestHandshake is the real thing: a TLS server with the issued server
// certificate that requires and verifies client certificates, and a client
// on loopback that checks the server's.
func TestCAHandshake(t *testing.T) {
	ca, _ := newCA(t)
	other, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	pair := func(certPEM, keyPEM []byte, err error) tls.Certificate {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	server := pair(ca.IssueServer([]string{"API.example.test", "127.0.0.1", "::1"}, Options{}))
	bob := pair(ca.IssueClient("bob@example.com", false, Options{}))
	past := func() time.Time { return time.Now().AddDate(0, 0, -10) }
	tests := []struct {
		name       string
		serverName string
		server     tls.Certificate
		client     *tls.Certificate
		wantErr    string // "" = the handshake succeeds
	}{
		{"DNS name", "api.example.test", server, &bob, ""},
		{"IPv4", "127.0.0.1", server, &bob, ""},
		{"IPv6 SAN", "::1", server, &bob, ""}, // dialled over 127.0.0.1: only the name check differs
		{"wrong host", "other.example.test", server, &bob, "not other.example.test"},
		{"no client certificate", "127.0.0.1", server, nil, "certificate required"},
		{"client from another CA", "127.0.0.1", server,
			ptr(pair(other.IssueClient("bob@example.com", false, Options{}))), "unknown certificate authority"},
		{"expired client", "127.0.0.1", server,
			ptr(pair(ca.IssueClient("bob@example.com", false, Options{Days: 1, Now: past}))), "expired certificate"},
		{"server from another CA", "127.0.0.1",
			pair(other.IssueServer([]string{"127.0.0.1"}, Options{})), &bob, "unknown authority"},
		{"server certificate as client", "127.0.0.1", server, &server, "bad certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			peer, err := handshake(t, ca, tt.serverName, tt.server, tt.client)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("handshake = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if len(peer.EmailAddresses) != 1 || peer.EmailAddresses[0] != "bob@example.com" {
				t.Errorf("server saw client SAN %v, want bob@example.com", peer.EmailAddresses)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// handshake runs one TLS connection on loopback and returns the client
// certificate the server verified, or the first error either side saw.
func handshake(t *testing.T, ca *CA, serverName string, server tls.Certificate, client *tls.Certificate) (*x509.Certificate, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		peer *x509.Certificate
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{server},
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool(), MinVersion: tls.VersionTLS12})
		if err := s.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		// Echo one byte so the client learns of a rejection that TLS 1.3
		// reports only after the client's side of the handshake is done.
		var b [1]byte
		if _, err := io.ReadFull(s, b[:]); err == nil {
			s.Write(b[:])
		}
		done <- result{peer: s.ConnectionState().PeerCertificates[0], err: err}
	}()
	conf := &tls.Config{ServerName: serverName, RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12,
		// Send the certificate even when it does not match the server's
		// list of CAs (crypto/tls would send none), so the server decides.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if client == nil {
				return &tls.Certificate{}, nil
			}
			return client, nil
		}}
	c, err := tls.Dial("tcp", ln.Addr().String(), conf)
	if err == nil {
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		var b [1]byte
		if _, err = c.Write([]byte{'x'}); err == nil {
			_, err = io.ReadFull(c, b[:])
		}
	}
	if err != nil {
		ln.Close() // unblocks Accept if the dial never reached it
		<-done
		return nil, err
	}
	r := <-done
	return r.peer, r.err
}
