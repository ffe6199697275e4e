package policy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"mime"
	"strings"

	"github.com/emersion/go-message/charset"
)

// Limits bound the header section before anything is parsed. A message
// beyond them is still judged on the fields that were kept, and the
// verdict carries ReasonHeaderLimit: no person's mail has thousands of
// header fields, and not replying is the safe answer.
type Limits struct {
	MaxFields int // header fields kept per message
	MaxBytes  int // bytes of names and values kept per message
}

// DefaultLimits are generous for real mail (a long Received chain has a few
// dozen fields) and small enough that a hostile message costs little.
var DefaultLimits = Limits{MaxFields: 1000, MaxBytes: 256 << 10}

// Field is one header field as the MTA passed it: the value may still be
// folded and RFC 2047-encoded; the classifier unfolds and decodes only the
// fields it reads.
type Field struct {
	Name, Value string
}

// Header is a message's header section in order, with its bounds.
// The milter fills it field by field; ReadHeader fills it from a file.
// Both paths end in Add, so `check` and the milter cannot disagree.
type Header struct {
	Fields    []Field
	Truncated bool // fields were dropped because a limit was reached
	limits    Limits
	bytes     int
}

// NewHeader returns an empty header section bounded by l; a zero field of
// l takes its default.
func NewHeader(l Limits) Header {
	if l.MaxFields <= 0 {
		l.MaxFields = DefaultLimits.MaxFields
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultLimits.MaxBytes
	}
	return Header{limits: l}
}

// Add appends a field unless that would pass a limit, in which case the
// field is dropped and the header marked truncated. Names are kept as
// given: rules compare them without regard to case.
func (h *Header) Add(name, value string) {
	if h.limits.MaxFields == 0 {
		*h = NewHeader(h.limits)
	}
	n := len(name) + len(value)
	if len(h.Fields) >= h.limits.MaxFields || h.bytes+n > h.limits.MaxBytes || n > MaxFieldBytes {
		h.Truncated = true
		return
	}
	h.bytes += n
	h.Fields = append(h.Fields, Field{name, value})
}

// AddBytes is Add for byte slices, which it copies only when the field
// is kept: a header past its limits costs no allocation per field.
func (h *Header) AddBytes(name, value []byte) {
	if h.limits.MaxFields == 0 {
		*h = NewHeader(h.limits)
	}
	n := len(name) + len(value)
	if len(h.Fields) >= h.limits.MaxFields || h.bytes+n > h.limits.MaxBytes || n > MaxFieldBytes {
		h.Truncated = true
		return
	}
	h.Add(string(name), string(value))
}

// Reset empties the header for the next message, keeping its memory.
func (h *Header) Reset() {
	clear(h.Fields)
	h.Fields, h.Truncated, h.bytes = h.Fields[:0], false, 0
}

// Has reports whether a field of that name is present.
func (h *Header) Has(name string) bool {
	for _, f := range h.Fields {
		if strings.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

// Get returns the first value of the named field, unfolded and decoded.
func (h *Header) Get(name string) string {
	for _, f := range h.Fields {
		if strings.EqualFold(f.Name, name) {
			return fieldText(f.Value)
		}
	}
	return ""
}

// ErrNoHeader is returned by ReadHeader for empty input.
var ErrNoHeader = errors.New("empty input: no header section")

// ReadHeader reads a header section as Postfix's cleanup splits one: a
// line that is neither a field nor a continuation ends the header (it is
// the first body line), so `check` judges the fields the milter would be
// sent. A leading mbox "From " line is skipped, since saved mail often
// has one. Fields are bounded as Add bounds them; input past the header
// is not read.
func ReadHeader(r io.Reader, l Limits) (Header, error) {
	h := NewHeader(l)
	br := bufio.NewReader(r)
	var name, value []byte // reused: a header past its limits costs no allocation per field
	flush := func() {
		if len(name) > 0 {
			h.AddBytes(name, value)
		}
		name, value = name[:0], value[:0]
	}
	var lineBuf []byte
	skip := false // inside a field that was too long: drop its continuations
	for first := true; ; first = false {
		line, cut, err := readLine(br, lineBuf[:0], MaxFieldBytes)
		lineBuf = line
		if err != nil && !errors.Is(err, io.EOF) {
			return h, err
		}
		if len(line) == 0 && !cut { // end of input
			flush()
			if first {
				return h, ErrNoHeader
			}
			return h, nil
		}
		t := bytes.TrimRight(line, "\r\n")
		if first && bytes.HasPrefix(t, []byte("From ")) {
			continue // mbox separator
		}
		switch {
		case len(t) == 0 && !cut: // the blank line before the body
			flush()
			return h, nil
		case len(t) > 0 && (t[0] == ' ' || t[0] == '\t'):
			if skip {
				break
			}
			if len(name) == 0 { // a continuation with nothing to continue: body
				return h, nil
			}
			if cut || len(value)+len(t)+2 > MaxFieldBytes {
				name, skip, h.Truncated = name[:0], true, true
				break
			}
			value = append(value, "\r\n"...)
			value = append(value, t...)
		default:
			colon := bytes.IndexByte(t, ':')
			// RFC 822's obsolete syntax allows white space before the
			// colon ("Subject : x"); Postfix takes it as a header too.
			fname := bytes.TrimRight(t[:max(colon, 0)], " \t")
			if colon <= 0 || len(fname) == 0 || !isFieldName(fname) {
				flush() // not a field: the body starts here
				return h, nil
			}
			flush()
			skip = false
			if cut {
				skip, h.Truncated = true, true
				break
			}
			name = append(name[:0], fname...)
			value = append(value[:0], bytes.TrimLeft(t[colon+1:], " \t")...)
		}
		if err != nil { // the last line had no newline
			flush()
			return h, nil
		}
	}
}

// MaxFieldBytes bounds one header field, as Postfix's header_size_limit
// (102400) does; a longer field is dropped and the header marked truncated.
const MaxFieldBytes = 100 << 10

// readLine reads one line, appending it to line. A line longer than max
// is cut (cut is true) and the rest of it is read and thrown away, so a
// hostile 1 GiB line costs no memory.
func readLine(br *bufio.Reader, line []byte, max int) (_ []byte, cut bool, err error) {
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) <= max {
			line = append(line, chunk...)
		} else {
			cut = true
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return line, cut, err
	}
}

// isFieldName reports whether b is an RFC 5322 field name: printable
// US-ASCII except colon.
func isFieldName(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

var wordDecoder = &mime.WordDecoder{CharsetReader: charset.Reader}

// fieldText unfolds a value (RFC 5322 section 2.2.3) and decodes RFC 2047
// encoded words. The common case, a short ASCII token, is returned as is
// without allocating.
func fieldText(v string) string {
	if strings.ContainsAny(v, "\r\n") {
		b := make([]byte, 0, len(v))
		for i := 0; i < len(v); i++ {
			if v[i] != '\r' && v[i] != '\n' {
				b = append(b, v[i])
			}
		}
		v = string(b)
	}
	if strings.Contains(v, "=?") {
		if d, err := wordDecoder.DecodeHeader(v); err == nil {
			v = d
		}
	}
	return strings.TrimSpace(v)
}

// token returns a structured field's main token: comments and parameters
// stripped, white space trimmed (RFC 3834 section 5, RFC 5322 section 3.2.2).
func token(v string) string {
	v = fieldText(v)
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	if strings.IndexByte(v, '(') >= 0 {
		v = stripComments(v)
	}
	return strings.TrimSpace(v)
}

// stripComments removes (nested) comments; an unclosed comment runs to
// the end of the value.
func stripComments(v string) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteByte(c)
		}
	}
	return b.String()
}
