// Package siteca is a small certificate authority for one replygate site.
//
// The HTTPS API authenticates users by TLS client certificate: the SAN
// e-mail address of a certificate names the user it may manage, and admin
// certificates (matched by fingerprint or subject in the config) manage
// everyone. Admins need a way to make those certificates that does not
// involve learning openssl; `replygate ca` is that way, and this package is
// its engine. Tests use it too, to make expired certificates and ones from
// an untrusted second CA.
//
// It uses only the standard library: ECDSA P-256 keys, PKCS#8 PEM key
// files (0600), random 128-bit serials. It leaves revocation, renewal and
// the matching of certificates to users to others: the API decides what a
// verified certificate may do, using Fingerprint and AdminOU from here.
package siteca
