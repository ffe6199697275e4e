// Package dkimsign adds a DKIM signature (RFC 6376) to the replies the
// vacation responder sends, so that they pass DMARC for the user's domain
// at the receiver.
//
// Load reads the private key once, at start-up; Sign then does no I/O and
// is safe for concurrent use (the signature's t= tag is the current time). The signing itself is github.com/emersion/go-msgauth/dkim
// with relaxed/relaxed canonicalization and SHA-256 (RFC 8301 forbids
// SHA-1). Publishing the public key in DNS (selector._domainkey.domain) is
// the admin's job; which replies to sign, and with which Signer, is the
// caller's.
package dkimsign
