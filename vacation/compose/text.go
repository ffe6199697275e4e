package compose

import (
	"encoding/base64"
	"mime"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
)

// header is the original header, looked up by name.
type header struct {
	fields []Field
}

func newHeader(fs []Field) header { return header{fs} }

// first returns the value of the first field named name (case-insensitive,
// blanks around the name ignored, as policy reads them), or "".
func (h header) first(name string) string {
	for _, f := range h.fields {
		if strings.EqualFold(strings.TrimSpace(f.Name), name) {
			return f.Value
		}
	}
	return ""
}

// wordDecoder decodes RFC 2047 encoded-words in the charsets go-message
// knows (ISO-8859-*, Windows-125*, KOI8, GB18030, Shift_JIS, ...), not just
// UTF-8 and Latin-1. Importing go-message/charset also sets
// message.CharsetReader for the whole program, so go-message decodes those
// charsets everywhere; no package of ours relies on it not doing so.
var wordDecoder = mime.WordDecoder{CharsetReader: charset.Reader}

// autoSubject returns the default subject for an original subject given
// raw (folded, possibly encoded): "Auto: " and the decoded subject, with
// any "Auto:" prefixes it already had folded into one, so that two
// responders never grow "Auto: Auto: Auto: ...". An empty subject gives
// "Automated reply", as Cyrus's sieve does.
func autoSubject(raw string) string {
	if len(raw) > maxRawSubject {
		raw = raw[:maxRawSubject]
	}
	// Unfold (RFC 5322 section 2.2.3) by turning every line break into a
	// blank; clean collapses the runs.
	raw = strings.NewReplacer("\r", " ", "\n", " ").Replace(raw)
	s, err := wordDecoder.DecodeHeader(raw)
	if err != nil {
		s = raw // unknown charset: show the encoded-words as they are
	}
	s = clean(s)
	for len(s) >= 5 && strings.EqualFold(s[:5], "auto:") {
		s = strings.TrimSpace(s[5:])
	}
	if s == "" {
		return "Automated reply"
	}
	return "Auto: " + s
}

// clean makes s fit for an unstructured header field: invalid UTF-8
// becomes U+FFFD, every control character (C0, DEL, C1, so CR and LF) and
// every kind of blank (tabs, line and paragraph separators, no-break
// spaces) becomes one space, runs of them collapse, and the ends are
// trimmed.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	b.Grow(len(s))
	blank := false
	for _, r := range s {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			blank = b.Len() > 0
			continue
		}
		if blank {
			b.WriteByte(' ')
			blank = false
		}
		b.WriteRune(r)
	}
	return b.String()
}

// truncate caps s at n characters (runes), ending in "..." when it cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i, count := 0, 0
	for i = range s {
		if count == n-3 {
			break
		}
		count++
	}
	return strings.TrimRight(s[:i], " ") + "..."
}

// encodeText encodes s (already cleaned) for an unstructured field: as is
// when it is ASCII, RFC 2047 Q-encoded otherwise. ASCII text that looks
// like an encoded-word ("=?") is B-encoded, so a reader shows the
// characters, not what they would decode to.
func encodeText(s string) string {
	if e := mime.QEncoding.Encode("utf-8", s); e != s {
		return e
	}
	if !strings.Contains(s, "=?") {
		return s
	}
	// s is ASCII here. Chunks of 36 octets make encoded-words of 60
	// characters, so each fits a folded line of 76 (RFC 2047 section 2).
	var words []string
	for len(s) > 0 {
		n := min(len(s), 36)
		words = append(words, "=?utf-8?b?"+base64.StdEncoding.EncodeToString([]byte(s[:n]))+"?=")
		s = s[n:]
	}
	return strings.Join(words, " ")
}

// normalizeBody makes a body fit for a text part: valid UTF-8, line breaks
// as LF, no control characters but tab and line breaks, and a final line
// break.
func normalizeBody(s string) string {
	if s == "" {
		return ""
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	s = strings.Map(func(r rune) rune {
		if r != '\n' && r != '\t' && unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s
}

// maxLine is the longest line sent as 7bit: RFC 5322 section 2.1.1's
// "SHOULD" limit, not its hard 998, so that nothing between us and the
// reader re-wraps the text.
const maxLine = 78

// transferEncoding returns "7bit" when body (normalized) is short-lined
// ASCII with no trailing blanks (which transports may strip), and
// "quoted-printable" otherwise.
func transferEncoding(body string) string {
	for line := range strings.SplitSeq(body, "\n") {
		if len(line) > maxLine || strings.HasSuffix(line, " ") || strings.HasSuffix(line, "\t") {
			return "quoted-printable"
		}
		for i := 0; i < len(line); i++ {
			if line[i] >= 0x80 {
				return "quoted-printable"
			}
		}
	}
	return "7bit"
}
