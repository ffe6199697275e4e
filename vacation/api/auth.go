package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/replygate/replygate/internal/siteca"
	"github.com/replygate/replygate/vacation/store"
)

// principal is who a request speaks for, once authenticated.
type principal struct {
	who       string   // for the audit log: "cert:CN=alice@example.com", "token:3f9a… (bugtracker)", "local:uid=0"
	admin     bool     // manages every address
	addresses []string // else: the addresses it manages, Key form
}

// may reports whether p manages address (Key form).
func (p principal) may(address string) bool {
	return p.admin || slices.Contains(p.addresses, address)
}

// errUnauthenticated is a request with credentials that prove nothing:
// none, a bad token, a certificate that does not verify. The reason goes
// to the log; the client learns only that it is 401.
type errUnauthenticated struct{ reason string }

func (e errUnauthenticated) Error() string { return "unauthenticated: " + e.reason }

// tokenPrefix starts every token, so a leaked one is easy to grep for.
const tokenPrefix = "rgt_"

// GenerateToken makes a new token: the secret to hand out once, and the
// store.Token (ID and hash) to keep. 256 random bits: a single SHA-256
// is then as good as any password hash, and fast to check.
func GenerateToken(name string, admin bool, addresses []string, now time.Time) (secret string, t store.Token, err error) {
	var id [6]byte
	var key [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", store.Token{}, err
	}
	if _, err := rand.Read(key[:]); err != nil {
		return "", store.Token{}, err
	}
	t = store.Token{
		ID: hex.EncodeToString(id[:]), Name: name, Admin: admin, Addresses: addresses, Created: now,
	}
	k := base64.RawURLEncoding.EncodeToString(key[:])
	t.Hash = hashSecret(k)
	return tokenPrefix + t.ID + "_" + k, t, nil
}

func hashSecret(k string) string {
	h := sha256.Sum256([]byte(k))
	return hex.EncodeToString(h[:])
}

// splitToken takes "rgt_<id>_<secret>" apart.
func splitToken(tok string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(tok, tokenPrefix)
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, "_")
	if !ok || len(id) != 12 || len(secret) != 43 {
		return "", "", false
	}
	return id, secret, true
}

// byToken authenticates a bearer token against the store.
func (s *Server) byToken(ctx context.Context, tok string) (principal, error) {
	id, secret, ok := splitToken(tok)
	if !ok {
		return principal{}, errUnauthenticated{"malformed bearer token"}
	}
	t, err := s.st.GetToken(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		// Hash anyway: the answer takes as long for an unknown id.
		subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(hashSecret("")))
		return principal{}, errUnauthenticated{"unknown or revoked token " + id}
	}
	if err != nil {
		return principal{}, err
	}
	if subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(t.Hash)) != 1 {
		return principal{}, errUnauthenticated{"wrong secret for token " + id}
	}
	return principal{who: fmt.Sprintf("token:%s (%s)", t.ID, t.Name), admin: t.Admin, addresses: t.Addresses}, nil
}

// byCertificate authenticates the client certificate of r. The TLS layer
// only asked for it (tls.RequestClientCert) and checked that the client
// holds its key; verification happens here, so that a certificate from
// another CA, or an expired one, is answered with a 401 that is logged
// and counted like any other failure, not a bare handshake error.
func (s *Server) byCertificate(r *http.Request) (principal, error) {
	certs := r.TLS.PeerCertificates
	if s.cfg.ClientCAs == nil {
		return principal{}, errUnauthenticated{"client certificate given, but no client_ca is configured"}
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	leaf := certs[0]
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         s.cfg.ClientCAs,
		Intermediates: inter,
		CurrentTime:   s.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return principal{}, errUnauthenticated{fmt.Sprintf("client certificate %q: %v", leaf.Subject.String(), err)}
	}
	p := principal{who: "cert:" + leaf.Subject.String()}
	for _, a := range leaf.EmailAddresses {
		if k, err := ParseAddress("san", a); err == nil {
			p.addresses = append(p.addresses, k)
		}
	}
	fp := siteca.Fingerprint(leaf)
	for _, a := range s.cfg.Admins {
		if strings.EqualFold(a, fp) || a == leaf.Subject.String() {
			p.admin = true
		}
	}
	if !p.admin && len(p.addresses) == 0 {
		return principal{}, errUnauthenticated{fmt.Sprintf("client certificate %q names no e-mail address and is no admin", leaf.Subject.String())}
	}
	return p, nil
}

// bearer returns the token of an Authorization field, "" when it is not
// "Bearer TOKEN" (the scheme is case-insensitive, RFC 9110 section 11.1).
func bearer(h string) string {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// authenticate finds who r speaks for: the local socket's peer, a bearer
// token, or a client certificate, in that order. A request that offers
// a token is judged by it, even over TLS with a certificate.
func (s *Server) authenticate(r *http.Request) (principal, error) {
	if uid, ok := peerUID(r.Context()); ok {
		if s.cfg.LocalUIDs(uid) {
			return principal{who: fmt.Sprintf("local:uid=%d", uid), admin: true}, nil
		}
		return principal{}, errUnauthenticated{fmt.Sprintf("local uid %d may not use the socket", uid)}
	}
	if h := r.Header.Get("Authorization"); h != "" {
		tok := bearer(h)
		if tok == "" {
			return principal{}, errUnauthenticated{"Authorization is not a Bearer token"}
		}
		return s.byToken(r.Context(), tok)
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return s.byCertificate(r)
	}
	return principal{}, errUnauthenticated{"no credentials"}
}
