package senderauth

import (
	"errors"
	"strings"

	"github.com/emersion/go-msgauth/authres"

	"github.com/replygate/replygate/vacation/compose"
)

// fieldName is the header field read (RFC 8601 section 2.2).
const fieldName = "Authentication-Results"

// Bounds on what is read and said.
const (
	// maxFieldLen bounds a field value read. Real fields are a few hundred
	// bytes (a long one from Gmail with ARC and three results is under
	// 1 KB); only the authserv-id is read from the first maxFieldLen bytes
	// of a longer one, which counts as malformed.
	maxFieldLen = 16 << 10
	// maxWhy bounds how many results why lists.
	maxWhy = 8
)

// Passed reports whether the message with this header passed SPF, DKIM or
// DMARC according to the trusted Authentication-Results field: the topmost
// one whose authserv-id equals authservID (compared case-insensitively).
// ok is true when that field reports dmarc=pass, dkim=pass or spf=pass, any
// one of them: the question is whether the sender is who it claims to be
// by any measure, not whether its domain's policy was met. why says which
// result decided, for the log ("dkim=pass", "spf=fail dkim=none
// dmarc=fail", "no trusted Authentication-Results").
//
// Fields with another authserv-id, or whose authserv-id cannot be read,
// are skipped. If the trusted field itself cannot be parsed, Passed
// answers false and does not fall back to an older field: that one could
// be a forgery, and a sender who can garble our field (for example with a
// crafted MAIL FROM that our MTA copies into it) must not thereby get to
// choose which field is read.
//
// An empty authservID trusts nothing and so returns false.
func Passed(header []compose.Field, authservID string) (ok bool, why string) {
	if authservID == "" {
		return false, "no authserv-id configured"
	}
	if ok, why, found := aboveReceived(header, authservID); found {
		return ok, why
	}
	for _, f := range header {
		if !strings.EqualFold(strings.TrimSpace(f.Name), fieldName) {
			continue
		}
		raw := f.Value
		tooLong := len(raw) > maxFieldLen
		if tooLong {
			raw = raw[:maxFieldLen]
		}
		v, cleanErr := clean(unfold(raw))
		if !strings.EqualFold(authservIDOf(v), authservID) {
			continue
		}
		// RFC 8601 section 5: an MTA adds its field at the top, as it does
		// a Received field, and should delete fields bearing its own
		// authserv-id that arrived with the message. Not all do (Postfix
		// with OpenDKIM and OpenDMARC does not), so a sender can still
		// bring one, and it sits below everything our MTA added. The
		// topmost field with our id is therefore the one our border MTA
		// added last. A field below it may be ours too (each milter adds
		// its own) or the sender's, and nothing tells the two apart, so
		// the first match decides and no later one is looked at.
		if tooLong {
			return false, "malformed Authentication-Results from " + authservID + ": too long"
		}
		if cleanErr != nil {
			return false, "malformed Authentication-Results from " + authservID + ": " + cleanErr.Error()
		}
		id, results, err := authres.Parse(v)
		if err != nil || !strings.EqualFold(id, authservID) {
			return false, "malformed Authentication-Results from " + authservID
		}
		return decide(results)
	}
	return false, "no trusted Authentication-Results"
}

// decide turns the results of the trusted field into Passed's answer.
func decide(results []authres.Result) (bool, string) {
	var spf, dkim, dmarc []string
	for _, r := range results {
		switch r := r.(type) {
		case *authres.SPFResult:
			spf = append(spf, "spf="+word(r.Value))
		case *authres.DKIMResult:
			dkim = append(dkim, "dkim="+word(r.Value))
		case *authres.DMARCResult:
			dmarc = append(dmarc, "dmarc="+word(r.Value))
		}
	}
	// Prefer the strongest statement in why: DMARC covers the From
	// address a person reads, DKIM a signing domain, SPF only the
	// envelope.
	for _, list := range [][]string{dmarc, dkim, spf} {
		for _, s := range list {
			if s == "dmarc=pass" || s == "dkim=pass" || s == "spf=pass" {
				return true, s
			}
		}
	}
	all := append(append(spf, dkim...), dmarc...)
	if len(all) == 0 {
		return false, "no spf, dkim or dmarc result"
	}
	if len(all) > maxWhy {
		all = append(all[:maxWhy], "...")
	}
	return false, strings.Join(all, " ")
}

// word returns a result value for why: as written when it looks like a
// result keyword (RFC 8601 section 2.7: pass, fail, none, softfail...),
// else "invalid", so that why stays short and plain whatever the field
// holds.
func word(v authres.ResultValue) string {
	s := string(v)
	if s == "" || len(s) > 16 {
		return "invalid"
	}
	for _, c := range []byte(s) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return "invalid"
		}
	}
	return s
}

// unfold undoes RFC 5322 section 2.2.3 folding. A field value holds no
// line break once unfolded, so every CR and LF is dropped, which also
// copes with bare LF line endings.
func unfold(v string) string {
	if !strings.ContainsAny(v, "\r\n") {
		return v
	}
	return strings.NewReplacer("\r", "", "\n", "").Replace(v)
}

// authservIDOf returns the authserv-id of a cleaned field value: the first
// word before the first ";" (RFC 8601 section 2.2), or "" when there is
// no ";".
func authservIDOf(v string) string {
	head, _, found := strings.Cut(v, ";")
	if !found {
		return ""
	}
	fs := strings.Fields(head)
	if len(fs) == 0 {
		return ""
	}
	return fs[0]
}

var (
	errComment = errors.New("unterminated comment")
	errQuote   = errors.New("unterminated quoted-string")
)

// clean prepares an unfolded field value for authres.Parse, which splits
// the value at every ";" and every space and ignores comments (it has a
// TODO for them). It
//
//   - replaces each comment (RFC 5322 section 3.2.2: nested, with
//     quoted-pairs) by a space. OpenDKIM writes "dkim=pass (2048-bit key;
//     unprotected)", whose ";" would otherwise end the result early, and
//     Gmail puts the sender's address in a comment;
//   - empties each quoted-string (RFC 5322 section 3.2.4). Property values
//     such as smtp.mailfrom can be chosen by the sender: a MAIL FROM of
//     <"x; dkim=pass"@example.com> must not read as a second result. Only
//     the methods and results matter here, never the values.
//
// On an unterminated comment or quoted-string it returns what it cleaned
// so far, so that the authserv-id can still be read, and an error.
func clean(v string) (string, error) {
	var b strings.Builder
	b.Grow(len(v))
	depth := 0     // comment nesting
	quote := false // inside a quoted-string
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case depth > 0:
			switch c {
			case '\\':
				i++
			case '(':
				depth++
			case ')':
				depth--
			}
		case quote:
			switch c {
			case '\\':
				i++
			case '"':
				quote = false
				b.WriteByte('"')
			}
		case c == '(':
			depth = 1
			b.WriteByte(' ')
		case c == '"':
			quote = true
			b.WriteByte('"')
		default:
			b.WriteByte(c)
		}
	}
	switch {
	case depth > 0:
		return b.String(), errComment
	case quote:
		return b.String(), errQuote
	}
	return b.String(), nil
}

// aboveReceived reads every trusted field above the first Received field.
// Our MTA writes its Received field before any milter runs, and milters
// insert their Authentication-Results at the top, above it; whatever the
// sender brought sits below. So on a host where the checks run in the
// same MTA (Postfix with OpenDKIM and OpenDMARC, one field each), all
// fields above the first Received are ours, and any one of them passing
// is enough. found is false when no trusted field is there (the checks ran
// on an earlier host), and Passed falls back to the topmost trusted field.
func aboveReceived(header []compose.Field, authservID string) (ok bool, why string, found bool) {
	received := false
	for _, f := range header {
		if strings.EqualFold(strings.TrimSpace(f.Name), "Received") {
			received = true
			break
		}
	}
	if !received {
		return false, "", false // no boundary to trust: the topmost rule applies
	}
	var whys []string
	for _, f := range header {
		name := strings.TrimSpace(f.Name)
		if strings.EqualFold(name, "Received") {
			break
		}
		if !strings.EqualFold(name, fieldName) {
			continue
		}
		raw := f.Value
		if len(raw) > maxFieldLen {
			raw = raw[:maxFieldLen]
		}
		v, cleanErr := clean(unfold(raw))
		if !strings.EqualFold(authservIDOf(v), authservID) {
			continue
		}
		// One of ours that cannot be read refuses, as in Passed: a sender
		// who garbles our field must not get to pick another.
		if cleanErr != nil || len(f.Value) > maxFieldLen {
			return false, "malformed Authentication-Results from " + authservID, true
		}
		id, results, err := authres.Parse(v)
		if err != nil || !strings.EqualFold(id, authservID) {
			return false, "malformed Authentication-Results from " + authservID, true
		}
		found = true
		ok, why := decide(results)
		if ok {
			return true, why, true
		}
		whys = append(whys, why)
	}
	return false, strings.Join(whys, "; "), found
}
