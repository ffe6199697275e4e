package siteca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Files of a CA directory.
const (
	CertFile = "ca.crt" // the CA certificate, PEM, 0644: the API's client_ca
	KeyFile  = "ca.key" // the CA's private key, PKCS#8 PEM, 0600
)

// AdminOU is the Subject OrganizationalUnit of admin client certificates.
// It is a label that makes an admin certificate recognisable by its subject
// (CN=ADDRESS,OU=replygate-admin); what makes it an admin is the config
// naming its fingerprint or subject, not this field alone.
const AdminOU = "replygate-admin"

// Default validity periods, in days.
const (
	DefaultCADays   = 3650
	DefaultCertDays = 365
)

// skew is how far before "now" a certificate becomes valid, so that a peer
// whose clock is a little behind ours accepts it at once.
const skew = 5 * time.Minute

// Options tune what Init, New and the Issue methods make.
type Options struct {
	// Days is the validity period; 0 means DefaultCADays for a CA and
	// DefaultCertDays for a certificate.
	Days int
	// Now is the clock; nil means time.Now. Tests set it in the past to
	// make certificates that have already expired.
	Now func() time.Time
	// Force lets Init replace an existing CA. It matters to Init only.
	Force bool
}

func (o Options) validity(def int) (notBefore, notAfter time.Time, err error) {
	days := o.Days
	if days < 0 {
		return time.Time{}, time.Time{}, fmt.Errorf("validity %d days: must be positive", days)
	}
	if days == 0 {
		days = def
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	t := now().UTC().Truncate(time.Second)
	return t.Add(-skew), t.AddDate(0, 0, days), nil
}

// CA is a loaded site CA: its certificate and the key that signs.
type CA struct {
	Cert *x509.Certificate
	key  crypto.Signer
}

// New makes a CA in memory, written nowhere. Init uses it; tests use it for
// a second, untrusted CA.
func New(opt Options) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	nb, na, err := opt.validity(DefaultCADays)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	skid := sha256.Sum256(spki)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// Two sites' CAs (or a re-made one) must not share a subject name,
		// or chain building and admins reading certificates get confused:
		// the name carries part of the key's hash.
		Subject:               pkix.Name{CommonName: "replygate site CA " + hex.EncodeToString(skid[:4])},
		NotBefore:             nb,
		NotAfter:              na,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true, // it signs leaves only
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          skid[:20],
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key}, nil
}

// Init makes a new CA in dir (created 0700): CertFile and KeyFile. It
// refuses, naming the file, when either already exists, unless opt.Force:
// replacing a CA invalidates every certificate it signed.
func Init(dir string, opt Options) error {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	if !opt.Force {
		for _, p := range []string{certPath, keyPath} {
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("%s already exists: a CA is there (force to replace it and invalidate its certificates)", p)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := New(opt)
	if err != nil {
		return err
	}
	keyPEM, err := encodeKey(ca.key)
	if err != nil {
		return err
	}
	return WritePair(certPath, keyPath, ca.CertPEM(), keyPEM, opt.Force)
}

// Load reads the CA in dir and checks that its key matches its certificate.
// A missing CA is an error that wraps fs.ErrNotExist.
func Load(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	certs, err := readCerts(certPath)
	if err != nil {
		return nil, err
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, fmt.Errorf("%s: not a CA certificate", certPath)
	}
	b, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: no PKCS#8 PRIVATE KEY block", keyPath)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	key, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: %T cannot sign", keyPath, k)
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s does not belong to %s", keyPath, certPath)
	}
	return &CA{Cert: cert, key: key}, nil
}

// CertPEM is the CA certificate as PEM, what CertFile holds.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// Pool is a pool holding only this CA: the RootCAs of a client that checks
// the API's server certificate, or the ClientCAs of the API.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// IssueClient makes a client certificate for address: SAN e-mail and
// Subject CN are the address as ParseAddress returns it, the only extended
// key usage is client authentication, and admin certificates carry Subject
// OU AdminOU. It returns the certificate and its new key (PKCS#8) as PEM.
func (ca *CA) IssueClient(address string, admin bool, opt Options) (certPEM, keyPEM []byte, err error) {
	addr, err := ParseAddress(address)
	if err != nil {
		return nil, nil, err
	}
	subj := pkix.Name{CommonName: addr}
	if admin {
		subj.OrganizationalUnit = []string{AdminOU}
	}
	return ca.issue(&x509.Certificate{
		Subject:        subj,
		EmailAddresses: []string{addr},
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, opt)
}

// IssueServer makes a server certificate for hosts, each a DNS name or an
// IP address (exactly those: nothing like localhost is added unasked). The
// first host is also the Subject CN, for people reading the certificate;
// clients check the SANs only.
func (ca *CA) IssueServer(hosts []string, opt Options) (certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 {
		return nil, nil, errors.New("server certificate: no host")
	}
	tmpl := &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		name, err := checkDNSName(h)
		if err != nil {
			return nil, nil, err
		}
		tmpl.DNSNames = append(tmpl.DNSNames, name)
	}
	tmpl.Subject = pkix.Name{CommonName: strings.ToLower(hosts[0])}
	return ca.issue(tmpl, opt)
}

// issue fills in what every leaf shares (key, serial, validity, key usage)
// and signs it.
func (ca *CA) issue(tmpl *x509.Certificate, opt Options) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if tmpl.NotBefore, tmpl.NotAfter, err = opt.validity(DefaultCertDays); err != nil {
		return nil, nil, err
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return nil, nil, err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature // ECDSA signs; it never enciphers keys
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	if keyPEM, err = encodeKey(key); err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// Fingerprint is "sha256:" and the lower-case hex SHA-256 of cert's DER:
// how the config names admin certificates, and how the API matches them.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ParseAddress checks a client certificate's address and returns it with
// the domain in lower case (domains are case-insensitive; local parts, by
// RFC 5321, are not, so that part is kept as given).
//
// Only a bare address is accepted. "Name <a@b>" and "<a@b>" are refused
// rather than reduced to a@b: a certificate is an identity, and it should
// be exactly what the admin typed, not our guess at it. Quoted local parts,
// non-ASCII (the rfc822Name SAN is ASCII; RFC 8398's SmtpUTF8Mailbox is not
// supported) and control characters are refused too.
func ParseAddress(s string) (string, error) {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return "", fmt.Errorf("address %q: control characters are not allowed", s)
		}
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return "", fmt.Errorf("address %q: not a bare address like user@example.com (%v)", s, err)
	}
	if a.Name != "" || a.Address != s {
		return "", fmt.Errorf("address %q: want the bare address %s, without a name, <> or quotes", s, a.Address)
	}
	for _, r := range s {
		if r > 0x7e {
			return "", fmt.Errorf("address %q: only ASCII addresses fit a certificate's e-mail SAN", s)
		}
	}
	at := strings.LastIndexByte(s, '@')
	return s[:at] + "@" + strings.ToLower(s[at+1:]), nil
}

// checkDNSName accepts a host name of letters, digits and hyphens in dot
// separated labels, and returns it in lower case.
func checkDNSName(h string) (string, error) {
	name := strings.ToLower(strings.TrimSuffix(h, "."))
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("host %q: %s (want a DNS name or an IP address)", h, why)
	}
	if name == "" || len(name) > 253 {
		return bad("bad length")
	}
	for _, l := range strings.Split(name, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return bad("bad label " + fmt.Sprintf("%q", l))
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return bad(fmt.Sprintf("character %q", c))
			}
		}
	}
	return name, nil
}

// newSerial is a random 128-bit serial (CA/Browser Forum rules ask for at
// least 64 bits of randomness, so serials cannot be predicted).
func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ReadCert reads the first certificate of a PEM file.
func ReadCert(path string) (*x509.Certificate, error) {
	certs, err := readCerts(path)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE", path)
	}
	return certs, nil
}
