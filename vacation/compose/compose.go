package compose

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message"
)

// Field is one header field of the original message, raw: the value may be
// folded and may hold RFC 2047 encoded-words.
type Field struct {
	Name, Value string
}

// Original is what Compose needs of the message being answered. Its body
// is deliberately absent: a vacation reply never quotes it.
type Original struct {
	MailFrom string  // envelope sender (with or without <>); the reply's recipient
	Header   []Field // header fields in order
}

// Settings is the user's side of the reply.
type Settings struct {
	Address  string // the user's address: From of the reply
	FromName string // display name of From; may be UTF-8
	Subject  string // "" means "Auto: " + the original subject
	Body     string // text/plain, UTF-8
	HTMLBody string // optional; when set the reply is multipart/alternative
	// EnvelopeFromUser makes the reply's MAIL FROM the user's address
	// instead of <>. RFC 3834 section 3.3 recommends <>; some relays
	// refuse it.
	EnvelopeFromUser bool
}

// Reply is a composed reply with its envelope.
type Reply struct {
	MailFrom string // envelope sender; "" is <>
	Rcpt     string // envelope recipient: the original's envelope sender
	Message  []byte // the whole RFC 5322 message, CRLF line endings
}

var (
	// ErrNullSender is returned when the original's envelope sender is
	// empty or <>: RFC 3834 section 2 and RFC 5230 section 4.6 forbid
	// answering it.
	ErrNullSender = errors.New("compose: null envelope sender")
	// ErrAddress is wrapped by the errors for an address (the user's, the
	// sender's) or a host name that cannot be used.
	ErrAddress = errors.New("invalid address")
)

// Limits on what goes into a reply.
const (
	// maxSubject caps the subject, in characters, after decoding. A sender
	// chooses the original subject; without a cap a 100 KB subject would
	// be reflected to whoever the envelope sender claims to be (the reply
	// as a spam carrier), and the encoded field would run to hundreds of
	// folded lines. 200 is more than any client shows.
	maxSubject = 200
	// maxFromName caps the display name of From, in characters.
	maxFromName = 100
	// maxAddress is the longest address accepted (RFC 5321 section
	// 4.5.3.1.3: a path is at most 256 octets with its brackets).
	maxAddress = 254
	// maxRawSubject bounds the raw original subject read at all.
	maxRawSubject = 16 << 10
)

// dateLayout is RFC 5322 section 3.3 date-time.
const dateLayout = "Mon, 02 Jan 2006 15:04:05 -0700"

// Compose returns the automatic reply of s to orig, dated now. host names
// the machine in the Message-ID's right-hand side; "" means the domain of
// s.Address.
//
// It fails with ErrNullSender when orig has no envelope sender, and with
// an error wrapping ErrAddress when an address or host is unusable.
func Compose(s Settings, orig Original, now time.Time, host string) (Reply, error) {
	rcpt, err := envelopeAddress(orig.MailFrom)
	if err != nil {
		return Reply{}, fmt.Errorf("compose: sender: %w", err)
	}
	user, err := envelopeAddress(s.Address)
	if err != nil {
		if errors.Is(err, ErrNullSender) {
			err = fmt.Errorf("%w: empty", ErrAddress)
		}
		return Reply{}, fmt.Errorf("compose: user: %w", err)
	}
	if host == "" {
		host = user[strings.LastIndexByte(user, '@')+1:]
	}
	if !isHostname(host) {
		return Reply{}, fmt.Errorf("compose: host %q: %w", host, ErrAddress)
	}

	h := newHeader(orig.Header)
	msgID := h.messageID()
	subject := s.Subject
	if subject = clean(subject); subject == "" {
		subject = autoSubject(h.first("Subject"))
	}
	subject = truncate(subject, maxSubject)
	text := normalizeBody(s.Body)
	html := normalizeBody(s.HTMLBody)

	sum := digest(now, user, rcpt, msgID, subject, s.FromName, text, html)

	var hdr []Field // in the order written
	add := func(name, value string) { hdr = append(hdr, Field{name, value}) }
	add("Date", now.Format(dateLayout))
	add("From", (&mail.Address{Name: truncate(clean(s.FromName), maxFromName), Address: user}).String())
	add("To", (&mail.Address{Address: rcpt}).String())
	add("Subject", encodeText(subject))
	add("Message-Id", "<"+newMessageID(now, sum)+"@"+host+">")
	if msgID != "" {
		// RFC 5322 section 3.6.4; RFC 5230 section 5.8 asks for both.
		add("In-Reply-To", "<"+msgID+">")
		add("References", "<"+strings.Join(references(h, msgID), "> <")+">")
	}
	// RFC 3834 section 5.1; RFC 5230 section 5.1.
	add("Auto-Submitted", "auto-replied")
	// The opt-out replygate exists to honour: ask other responders not to
	// answer this reply.
	add("X-Allow-Auto-Reply", "no")
	// Exchange and Outlook honour this instead of Auto-Submitted.
	add("X-Auto-Response-Suppress", "All")
	// QUIRK: RFC 3834 section 3.1.8 advises against Precedence, but many
	// older responders and list managers look at nothing else, and
	// Pigeonhole sends it too.
	add("Precedence", "bulk")
	add("MIME-Version", "1.0")

	var buf bytes.Buffer
	if html == "" {
		enc := transferEncoding(text)
		add("Content-Type", "text/plain; charset=utf-8")
		add("Content-Transfer-Encoding", enc)
		w, err := message.CreateWriter(&buf, toHeader(hdr))
		if err != nil {
			return Reply{}, fmt.Errorf("compose: %w", err)
		}
		if err := writeBody(w, enc, text); err != nil {
			return Reply{}, fmt.Errorf("compose: %w", err)
		}
	} else {
		textEnc, htmlEnc := transferEncoding(text), transferEncoding(html)
		boundary := newBoundary(sum, text, html)
		add("Content-Type", mime.FormatMediaType("multipart/alternative", map[string]string{"boundary": boundary}))
		w, err := message.CreateWriter(&buf, toHeader(hdr))
		if err != nil {
			return Reply{}, fmt.Errorf("compose: %w", err)
		}
		// RFC 2046 section 5.1.4: the preferred (richest) part comes last.
		for _, p := range []struct{ typ, enc, body string }{
			{"text/plain; charset=utf-8", textEnc, text},
			{"text/html; charset=utf-8", htmlEnc, html},
		} {
			pw, err := w.CreatePart(toHeader([]Field{
				{"Content-Type", p.typ},
				{"Content-Transfer-Encoding", p.enc},
			}))
			if err != nil {
				return Reply{}, fmt.Errorf("compose: %w", err)
			}
			if err := writeBody(pw, p.enc, p.body); err != nil {
				return Reply{}, fmt.Errorf("compose: %w", err)
			}
		}
		if err := w.Close(); err != nil {
			return Reply{}, fmt.Errorf("compose: %w", err)
		}
	}

	r := Reply{Rcpt: rcpt, Message: buf.Bytes()}
	if s.EnvelopeFromUser {
		r.MailFrom = user
	}
	return r, nil
}

// toHeader builds a go-message header that writes fs in order (go-message
// writes the most recently added field first).
func toHeader(fs []Field) message.Header {
	var h message.Header
	for i := len(fs) - 1; i >= 0; i-- {
		h.Add(fs[i].Name, fs[i].Value)
	}
	return h
}

func writeBody(w io.WriteCloser, enc, body string) error {
	if enc == "7bit" {
		body = strings.ReplaceAll(body, "\n", "\r\n")
	}
	if _, err := io.WriteString(w, body); err != nil {
		return err
	}
	return w.Close()
}

// envelopeAddress checks an envelope address (with or without <>) and
// returns it as a bare addr-spec. It is stricter than RFC 5321: no
// quoted local parts, blanks, comments or control characters, since the
// address goes both into a header field and to the MTA, and both must name
// the same mailbox. UTF-8 is accepted (RFC 6531); such a reply needs an
// SMTPUTF8 relay.
func envelopeAddress(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '<' && s[len(s)-1] == '>' {
		s = s[1 : len(s)-1]
	}
	if s == "" {
		return "", ErrNullSender
	}
	if len(s) > maxAddress {
		return "", fmt.Errorf("%w: longer than %d octets", ErrAddress, maxAddress)
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == '\uFFFD' || strings.ContainsRune("<>(),;\\\"", r) || (r >= 0x80 && r < 0xa0) {
			return "", fmt.Errorf("%w: %q", ErrAddress, s)
		}
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || !strings.Contains(a.Address, "@") {
		return "", fmt.Errorf("%w: %q", ErrAddress, s)
	}
	return a.Address, nil
}

// isHostname reports whether s is a plain domain name (letters, digits,
// hyphens and dots), fit for a Message-ID's right-hand side.
func isHostname(s string) bool {
	if s == "" || len(s) > 253 || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// digest hashes everything that makes a reply what it is. Its bits name
// the Message-ID and the MIME boundary, so the same inputs give the same
// bytes and two different replies (or one reply at two instants) differ.
func digest(now time.Time, parts ...string) [sha256.Size]byte {
	h := sha256.New()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(now.UnixNano()))
	h.Write(b[:])
	for _, p := range parts {
		binary.BigEndian.PutUint64(b[:], uint64(len(p)))
		h.Write(b[:])
		io.WriteString(h, p)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

var b32 = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// newMessageID returns the left-hand side of the reply's Message-ID: the
// time in base 36 and 80 bits of the digest, in the style of the draft
// "Recommendations for generating Message IDs".
func newMessageID(now time.Time, sum [sha256.Size]byte) string {
	t := now.UnixNano()
	if t < 0 {
		t = 0
	}
	return strconv.FormatInt(t, 36) + "." + b32.EncodeToString(sum[:10])
}

// newBoundary returns a multipart boundary that no part contains. It
// starts with "=_", which quoted-printable output can never hold; 7bit
// parts are checked.
func newBoundary(sum [sha256.Size]byte, parts ...string) string {
	for i := 0; ; i++ {
		b := "=_" + b32.EncodeToString(sum[:15])
		ok := true
		for _, p := range parts {
			if strings.Contains(p, b) {
				ok = false
			}
		}
		if ok {
			return b
		}
		sum = sha256.Sum256(append(sum[:], byte(i)))
	}
}
