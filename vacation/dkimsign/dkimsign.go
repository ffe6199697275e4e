package dkimsign

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// minRSABits is the smallest RSA key accepted. RFC 8301 section 3.2:
// verifiers must not accept keys under 1024 bits, so a smaller one would
// sign every reply with a signature that fails.
const minRSABits = 1024

// maxKeyFile bounds the key file read: a PEM RSA-4096 key is about 3.3 KB.
const maxKeyFile = 64 << 10

// signedFields are the header fields signed: RFC 6376 section 5.4.1's
// list, as far as a reply has them, and the fields that make the message
// an automatic reply (RFC 3834), so that a relay cannot strip them and
// turn the reply into something that other responders answer. Each is
// signed once more than it occurs (section 8.15, "over-signing"), so
// adding another instance later, or one that was absent, breaks the
// signature.
var signedFields = []string{
	"From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date",
	"Message-ID", "In-Reply-To", "References",
	"Auto-Submitted", "X-Allow-Auto-Reply", "X-Auto-Response-Suppress", "Precedence",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
}

// Signer signs messages for one domain and selector with one key. It is
// safe for concurrent use.
type Signer struct {
	domain, selector string
	key              crypto.Signer
}

// Load reads the private key in keyPEMPath, which holds one PEM block: an
// RSA key in PKCS#1 ("RSA PRIVATE KEY", as openssl genrsa and opendkim-genkey
// write it) or PKCS#8 ("PRIVATE KEY"), or an Ed25519 key in PKCS#8 (RFC 8463,
// as openssl genpkey -algorithm ed25519 writes it). domain is the d= tag
// and selector the s= tag: the public key is looked up at
// selector._domainkey.domain; both must be DNS names in ASCII. Errors
// about the key name the file.
func Load(keyPEMPath, domain, selector string) (*Signer, error) {
	if !isDNSName(domain) {
		return nil, fmt.Errorf("dkimsign: domain %q is not a DNS name", domain)
	}
	if !isDNSName(selector) {
		return nil, fmt.Errorf("dkimsign: selector %q is not a DNS name", selector)
	}
	key, err := readKey(keyPEMPath)
	if err != nil {
		return nil, fmt.Errorf("dkimsign: key %s: %w", keyPEMPath, err)
	}
	return &Signer{domain: strings.ToLower(domain), selector: selector, key: key}, nil
}

func readKey(path string) (crypto.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err // *PathError already names the file
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("larger than %d bytes, not a key", maxKeyFile)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if _, ok := block.Headers["Proc-Type"]; ok {
		return nil, errors.New("encrypted PEM keys are not supported")
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS#1 RSA private key: %w", err)
		}
		return checkRSA(k)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS#8 private key: %w", err)
		}
		switch k := k.(type) {
		case *rsa.PrivateKey:
			return checkRSA(k)
		case ed25519.PrivateKey:
			return k, nil
		default:
			// DKIM defines only rsa-sha256 and ed25519-sha256.
			return nil, fmt.Errorf("%T keys cannot sign DKIM (want RSA or Ed25519)", k)
		}
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("encrypted PEM keys are not supported")
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key (want \"RSA PRIVATE KEY\" or \"PRIVATE KEY\")", block.Type)
	}
}

func checkRSA(k *rsa.PrivateKey) (crypto.Signer, error) {
	if bits := k.N.BitLen(); bits < minRSABits {
		return nil, fmt.Errorf("RSA key of %d bits is too small (RFC 8301: at least %d)", bits, minRSABits)
	}
	return k, nil
}

// Sign returns msg, a whole RFC 5322 message (header, blank line, body),
// with a DKIM-Signature field prepended. Bare LF line endings are turned
// into CRLF first, as the SMTP client would send them, so that the
// signature covers the bytes on the wire; the message returned is the one
// to send. msg itself is not changed.
func (s *Signer) Sign(msg []byte) ([]byte, error) {
	msg = toCRLF(msg)
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	if end < 0 {
		return nil, errors.New("dkimsign: message has no end of header")
	}
	opts := &dkim.SignOptions{
		Domain:                 s.domain,
		Selector:               s.selector,
		Signer:                 s.key,
		Hash:                   crypto.SHA256,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             overSign(msg[:end+2]),
	}
	var out bytes.Buffer
	out.Grow(len(msg) + 1024)
	if err := dkim.Sign(&out, bytes.NewReader(msg), opts); err != nil {
		return nil, fmt.Errorf("dkimsign: %w", err)
	}
	return out.Bytes(), nil
}

// overSign returns the h= list for a header: each of signedFields as many
// times as it occurs, plus once.
func overSign(header []byte) []string {
	count := make(map[string]int)
	for _, line := range strings.Split(string(header), "\r\n") {
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue // a continuation line
		}
		name, _, ok := strings.Cut(line, ":")
		if ok {
			count[strings.ToLower(strings.TrimSpace(name))]++
		}
	}
	var keys []string
	for _, k := range signedFields {
		for range count[strings.ToLower(k)] + 1 {
			keys = append(keys, k)
		}
	}
	return keys
}

// toCRLF turns bare LF and bare CR into CRLF. It returns b itself when
// there are none, as in what compose writes.
func toCRLF(b []byte) []byte {
	crlf := bytes.Count(b, []byte("\r\n"))
	if bytes.Count(b, []byte("\r")) == crlf && bytes.Count(b, []byte("\n")) == crlf {
		return b
	}
	out := make([]byte, 0, len(b)+len(b)/32)
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '\r':
			out = append(out, '\r', '\n')
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	return out
}

// isDNSName reports whether s is a DNS name in ASCII (A-labels): labels of
// letters, digits and hyphens, not starting or ending with a hyphen, at
// most 63 bytes each and 253 in all. Both domain and selector go into the
// DKIM-Signature field, so this also keeps CR, LF and ";" out of it.
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return true
}
