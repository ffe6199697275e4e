package policy

import "strings"

// lower folds one ASCII letter; addresses and field names are compared
// without regard to ASCII case only (RFC 5321 domains; local parts are
// case-sensitive in theory, never in practice).
func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

// globFold matches s against a pattern where "*" stands for any run of
// characters, ignoring ASCII case. It does not allocate.
func globFold(pat, s string) bool {
	// Iterative matcher with one backtrack point, as in path.Match's
	// star handling: linear for patterns with one star, fine for few.
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pat) && pat[p] == '*':
			star, mark = p, i
			p++
		case p < len(pat) && lower(pat[p]) == lower(s[i]):
			p++
			i++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pat) && pat[p] == '*' {
		p++
	}
	return p == len(pat)
}

// splitAddr splits an address at its last "@"; an address without a
// domain (a bare "MAILER-DAEMON") is all local part.
func splitAddr(addr string) (local, domain string) {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[:i], addr[i+1:]
	}
	return addr, ""
}

// stripDetail removes "+detail" (any delimiter character) from a local
// part: bounces+1234 is bounces.
func stripDetail(local, delims string) string {
	if delims == "" {
		return local
	}
	if i := strings.IndexAny(local, delims); i > 0 {
		return local[:i]
	}
	return local
}

// originalSender undoes the sender rewriting that forwarders and outbound
// relays apply, so the system-sender rule sees who really sent the mail.
// RFC 5230 section 4.6 asks a responder to recognise system senders; a
// forwarded bounce arrives as SRS0=HHH=TT=example.org=MAILER-DAEMON@fwd.
//
//	SRS0=HHH=TT=domain=local@forwarder          (Sender Rewriting Scheme)
//	SRS1=HHH=fwd1==HHH=TT=domain=local@fwd2     (SRS, forwarded twice)
//	prvs=KDDDSSSSSS=local@domain, msprvs1=…=local@domain, btv1==…==local@domain (BATV)
func originalSender(addr string) string {
	local, domain := splitAddr(addr)
	switch {
	case hasPrefixFold(local, "SRS1=") || hasPrefixFold(local, "SRS1+") || hasPrefixFold(local, "SRS1-"):
		i := strings.Index(local, "==")
		if i < 0 {
			return addr
		}
		return srs0(local[i+2:], addr)
	case hasPrefixFold(local, "SRS0=") || hasPrefixFold(local, "SRS0+") || hasPrefixFold(local, "SRS0-"):
		return srs0(local[5:], addr)
	case hasPrefixFold(local, "prvs=") || hasPrefixFold(local, "msprvs1=") || hasPrefixFold(local, "btv1="):
		if i := strings.LastIndexByte(local, '='); i+1 < len(local) {
			return local[i+1:] + "@" + domain
		}
	}
	return addr
}

// srs0 decodes "HHH=TT=domain=local" into local@domain; on anything
// malformed it returns the address as it was.
func srs0(rest, addr string) string {
	parts := strings.SplitN(rest, "=", 4)
	if len(parts) != 4 || parts[2] == "" || parts[3] == "" {
		return addr
	}
	return parts[3] + "@" + parts[2]
}

// isBoundary reports whether c can stand next to an address in a
// To/Cc field without being part of it.
func isBoundary(c byte) bool {
	switch c {
	case '<', '>', ',', ';', ':', ' ', '\t', '\r', '\n', '(', ')', '"':
		return true
	}
	return false
}

// addresses calls fn with each addr-spec-like token (text around an "@"
// up to the nearest boundaries) in a raw address-list field. It does not
// allocate and does not care about display names or encoded words, which
// cannot hold an unquoted "@"; quoted strings and comments are skipped. QUIRK: a quoted local part with spaces
// ("a b"@example.com) is not recognised; no mail seen uses one.
func addresses(v string, fn func(local, domain string) bool) bool {
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '"': // a quoted display name: skip it
			for i++; i < len(v) && v[i] != '"'; i++ {
				if v[i] == '\\' {
					i++
				}
			}
			continue
		case '(': // a comment, perhaps nested: skip it
			depth := 1
			for i++; i < len(v) && depth > 0; i++ {
				switch v[i] {
				case '\\':
					i++
				case '(':
					depth++
				case ')':
					depth--
				}
			}
			i--
			continue
		case '@':
		default:
			continue
		}
		s := i
		for s > 0 && !isBoundary(v[s-1]) {
			s--
		}
		e := i + 1
		for e < len(v) && !isBoundary(v[e]) {
			e++
		}
		if s < i && e > i+1 && fn(v[s:i], v[i+1:e]) {
			return true
		}
		i = e - 1
	}
	return false
}
