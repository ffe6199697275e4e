package dkimsign

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/replygate/replygate/vacation/compose"
)

// key is a generated private key with its DKIM TXT record.
type key struct {
	name   string
	pem    []byte // the private key file
	record string // selector._domainkey TXT record
}

var (
	keysOnce sync.Once
	keys     []key
)

// testKeys generates, once per run, an RSA-2048 key written both as
// PKCS#1 and PKCS#8 and an Ed25519 key in PKCS#8.
func testKeys(t *testing.T) []key {
	t.Helper()
	keysOnce.Do(func() {
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rpub, err := x509.MarshalPKIXPublicKey(&rk.PublicKey)
		if err != nil {
			panic(err)
		}
		rsaRecord := "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(rpub)
		r8, err := x509.MarshalPKCS8PrivateKey(rk)
		if err != nil {
			panic(err)
		}
		epub, ek, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		e8, err := x509.MarshalPKCS8PrivateKey(ek)
		if err != nil {
			panic(err)
		}
		keys = []key{
			{"rsa-pkcs1", pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk)), rsaRecord},
			{"rsa-pkcs8", pemBlock("PRIVATE KEY", r8), rsaRecord},
			{"ed25519", pemBlock("PRIVATE KEY", e8), "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(epub)},
		}
	})
	return keys
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// verify checks msg's signatures against record, published for
// sel._domainkey.example.org only, and returns the single verification.
func verify(t *testing.T, msg []byte, record string) *dkim.Verification {
	t.Helper()
	lookup := func(domain string) ([]string, error) {
		if domain != "sel._domainkey.example.org" {
			return nil, fmt.Errorf("no TXT record for %s", domain)
		}
		return []string{record}, nil
	}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: lookup})
	if err != nil {
		t.Fatalf("dkim.VerifyWithOptions: %v", err)
	}
	if len(vs) != 1 {
		t.Fatalf("dkim.VerifyWithOptions found %d signatures, want 1", len(vs))
	}
	return vs[0]
}

// reply is a message as compose writes it: CRLF, folded fields, no Cc.
const reply = "Date: Mon, 03 Jun 2024 09:14:08 +0200\r\n" +
	"From: Alice <alice@example.org>\r\n" +
	"To: <bob@example.com>\r\n" +
	"Subject: Auto: Lunch\r\n" +
	"Message-Id: <r.2024060307140800.abc@example.org>\r\n" +
	"In-Reply-To: <20240603071405.12345@mx.example.com>\r\n" +
	"References: <20240601.1@mx.example.com>\r\n" +
	" <20240603071405.12345@mx.example.com>\r\n" +
	"Auto-Submitted: auto-replied\r\n" +
	"X-Allow-Auto-Reply: no\r\n" +
	"X-Auto-Response-Suppress: All\r\n" +
	"Precedence: bulk\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: 7bit\r\n" +
	"\r\n" +
	"I am away until Monday.\r\n" +
	"\r\n" +
	"Alice\r\n"

// wantSigned are the fields the brief asks to be signed.
var wantSigned = []string{"from", "to", "subject", "date", "message-id", "in-reply-to",
	"references", "auto-submitted", "mime-version", "content-type"}

func TestSignVerifies(t *testing.T) {
	for _, k := range testKeys(t) {
		s, err := Load(writeFile(t, "dkim.pem", k.pem), "example.org", "sel")
		if err != nil {
			t.Fatalf("Load(%s): %v", k.name, err)
		}
		signed, err := s.Sign([]byte(reply))
		if err != nil {
			t.Fatalf("Sign(%s): %v", k.name, err)
		}
		if !bytes.HasPrefix(signed, []byte("DKIM-Signature: ")) || !bytes.HasSuffix(signed, []byte("\r\n"+reply)) {
			t.Fatalf("Sign(%s) = %q, want a DKIM-Signature field followed by the message", k.name, signed)
		}
		sig := string(signed[:len(signed)-len(reply)])
		for _, tag := range []string{"c=relaxed/relaxed", "d=example.org", "s=sel"} {
			if !strings.Contains(sig, tag) {
				t.Errorf("Sign(%s) signature %q lacks %s", k.name, sig, tag)
			}
		}
		if alg := map[bool]string{true: "a=ed25519-sha256", false: "a=rsa-sha256"}[k.name == "ed25519"]; !strings.Contains(sig, alg) {
			t.Errorf("Sign(%s) signature %q lacks %s", k.name, sig, alg)
		}
		v := verify(t, signed, k.record)
		if v.Err != nil {
			t.Fatalf("verify(Sign(%s)) = %v, want no error", k.name, v.Err)
		}
		if v.Domain != "example.org" {
			t.Errorf("verify(Sign(%s)).Domain = %q, want example.org", k.name, v.Domain)
		}
		signedKeys := make(map[string]int)
		for _, h := range v.HeaderKeys {
			signedKeys[strings.ToLower(h)]++
		}
		for _, h := range wantSigned {
			// Over-signed: once more than the field occurs.
			if signedKeys[h] != 2 {
				t.Errorf("verify(Sign(%s)).HeaderKeys has %s %d times, want 2: %v", k.name, h, signedKeys[h], v.HeaderKeys)
			}
		}
		if signedKeys["cc"] != 1 {
			t.Errorf("verify(Sign(%s)).HeaderKeys has cc %d times, want 1 (absent, so adding it breaks the signature)", k.name, signedKeys["cc"])
		}
	}
}

// TestSignTampered changes a signed message in the ways a relay or an
// attacker might; each must fail verification.
func TestSignTampered(t *testing.T) {
	for _, k := range testKeys(t) {
		s, err := Load(writeFile(t, "dkim.pem", k.pem), "example.org", "sel")
		if err != nil {
			t.Fatalf("Load(%s): %v", k.name, err)
		}
		signed, err := s.Sign([]byte(reply))
		if err != nil {
			t.Fatalf("Sign(%s): %v", k.name, err)
		}
		for _, tt := range []struct{ name, old, new string }{
			{"body", "until Monday", "until Tuesday"},
			{"subject", "Subject: Auto: Lunch", "Subject: Auto: Dinner"},
			{"second from", "From: Alice", "From: ceo@example.org\r\nFrom: Alice"},
			{"added cc", "Subject:", "Cc: everyone@example.org\r\nSubject:"},
			{"stripped auto-submitted", "Auto-Submitted: auto-replied\r\n", ""},
			{"appended body", "Alice\r\n", "Alice\r\nclick http://evil.example/\r\n"},
		} {
			bad := strings.Replace(string(signed), tt.old, tt.new, 1)
			if bad == string(signed) {
				t.Fatalf("tampering %s changed nothing", tt.name)
			}
			if v := verify(t, []byte(bad), k.record); v.Err == nil {
				t.Errorf("verify(Sign(%s) with %s changed) succeeded, want a failure", k.name, tt.name)
			}
		}
		// Relaxed canonicalization (RFC 6376 section 3.4.2) survives what
		// relays do: re-folding, case of field names, trailing blanks.
		relaxed := strings.Replace(string(signed), "Subject: Auto: Lunch", "subject:   Auto:  Lunch  ", 1)
		if v := verify(t, []byte(relaxed), k.record); v.Err != nil {
			t.Errorf("verify(Sign(%s) with whitespace changed) = %v, want no error", k.name, v.Err)
		}
	}
}

// TestSignCompose signs a reply as compose writes it, and one with bare
// LF line endings, which Sign sends as CRLF.
func TestSignCompose(t *testing.T) {
	k := testKeys(t)[0]
	s, err := Load(writeFile(t, "dkim.pem", k.pem), "example.org", "sel")
	if err != nil {
		t.Fatal(err)
	}
	r, err := compose.Compose(
		compose.Settings{Address: "alice@example.org", FromName: "Zoë Alice", Body: "Weg bis Montag.\nGrüße"},
		compose.Original{MailFrom: "<bob@example.com>", Header: []compose.Field{
			{Name: "Subject", Value: "=?utf-8?q?Gr=C3=BC=C3=9Fe?="},
			{Name: "Message-ID", Value: "<m1@example.com>"},
		}},
		time.Date(2024, 6, 3, 9, 14, 8, 0, time.UTC), "")
	if err != nil {
		t.Fatal(err)
	}
	lf := []byte(strings.ReplaceAll(reply, "\r\n", "\n"))
	for name, msg := range map[string][]byte{"compose": r.Message, "bare LF": lf} {
		signed, err := s.Sign(msg)
		if err != nil {
			t.Fatalf("Sign(%s): %v", name, err)
		}
		if bytes.Contains(bytes.ReplaceAll(signed, []byte("\r\n"), nil), []byte("\n")) {
			t.Errorf("Sign(%s) left a bare LF: %q", name, signed)
		}
		if v := verify(t, signed, k.record); v.Err != nil {
			t.Errorf("verify(Sign(%s)) = %v, want no error", name, v.Err)
		}
	}
	if _, err := s.Sign([]byte("Subject: no body")); err == nil {
		t.Errorf("Sign(no end of header) succeeded, want an error")
	}
}

func TestSignConcurrent(t *testing.T) {
	k := testKeys(t)[2]
	s, err := Load(writeFile(t, "dkim.pem", k.pem), "example.org", "sel")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			msg := strings.Replace(reply, "Lunch", fmt.Sprint("Lunch ", i), 1)
			signed, err := s.Sign([]byte(msg))
			if err != nil {
				t.Errorf("Sign: %v", err)
				return
			}
			if v := verify(t, signed, k.record); v.Err != nil {
				t.Errorf("verify(Sign) = %v, want no error", v.Err)
			}
		})
	}
	wg.Wait()
}

func TestLoadErrors(t *testing.T) {
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ec8, err := x509.MarshalPKCS8PrivateKey(ek)
	if err != nil {
		t.Fatal(err)
	}
	epub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(epub)
	if err != nil {
		t.Fatal(err)
	}
	good := testKeys(t)[0].pem
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "no PEM block"},
		{"not pem", []byte("v=DKIM1; k=rsa; p=MIIBIjANBg"), "no PEM block"},
		{"bad der pkcs1", pemBlock("RSA PRIVATE KEY", []byte("garbage")), "parse PKCS#1 RSA private key"},
		{"bad der pkcs8", pemBlock("PRIVATE KEY", []byte("garbage")), "parse PKCS#8 private key"},
		{"public key", pemBlock("PUBLIC KEY", pub), `PEM block "PUBLIC KEY" is not a private key`},
		{"ecdsa", pemBlock("PRIVATE KEY", ec8), "*ecdsa.PrivateKey keys cannot sign DKIM"},
		{"ec private key", pemBlock("EC PRIVATE KEY", []byte("x")), `PEM block "EC PRIVATE KEY" is not a private key`},
		{"encrypted pkcs8", pemBlock("ENCRYPTED PRIVATE KEY", []byte("x")), "encrypted"},
		{"encrypted legacy", []byte("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00000000000000000000000000000000\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"), "encrypted"},
		{"too large", append(bytes.Repeat([]byte("#"), maxKeyFile), good...), "larger than"},
	}
	for _, tt := range tests {
		path := writeFile(t, "key.pem", tt.data)
		_, err := Load(path, "example.org", "sel")
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Load(%s) error = %v, want one naming %s and saying %q", tt.name, err, path, tt.want)
		}
	}

	missing := filepath.Join(t.TempDir(), "nope.pem")
	if _, err := Load(missing, "example.org", "sel"); err == nil || !strings.Contains(err.Error(), missing) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) error = %v, want a not-exist error naming %s", err, missing)
	}
	dir := t.TempDir()
	if _, err := Load(dir, "example.org", "sel"); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("Load(directory) error = %v, want one naming %s", err, dir)
	}

	path := writeFile(t, "key.pem", good)
	for _, tt := range []struct{ domain, selector string }{
		{"", "sel"}, {"example.org", ""}, {"exa mple.org", "sel"}, {"example.org\r\nBcc: x", "sel"},
		{"example.org", "sel;x=y"}, {"example..org", "sel"}, {"-example.org", "sel"}, {"exämple.org", "sel"},
	} {
		if _, err := Load(path, tt.domain, tt.selector); err == nil {
			t.Errorf("Load(%q, %q) succeeded, want an error", tt.domain, tt.selector)
		}
	}
	if _, err := Load(path, "Mail.Example.org", "2024-06.rsa"); err != nil {
		t.Errorf("Load(Mail.Example.org, 2024-06.rsa) = %v, want no error", err)
	}
}

// TestLoadSmallRSA loads a 512-bit key, as old opendkim-genkey -b 512
// made. Go refuses to generate one unless GODEBUG says so; the runtime
// rereads GODEBUG when it is set, so the setting lasts for this test only.
func TestLoadSmallRSA(t *testing.T) {
	t.Setenv("GODEBUG", "rsa1024min=0")
	k, err := rsa.GenerateKey(rand.Reader, 512)
	if err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, "small.pem", pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k)))
	_, err = Load(path, "example.org", "sel")
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "512 bits is too small") {
		t.Errorf("Load(512-bit RSA) error = %v, want one naming %s and the size", err, path)
	}
}
