package compose

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
)

var testNow = time.Date(2026, 7, 1, 9, 30, 0, 0, time.FixedZone("CEST", 2*60*60))

func baseSettings() Settings {
	return Settings{
		Address:  "alice@example.org",
		FromName: "Alice Example",
		Body:     "I am away until 14 July.\nYour mail will be read when I return.\n",
	}
}

func baseOriginal() Original {
	return Original{
		MailFrom: "<bob@example.net>",
		Header: []Field{
			{"From", "Bob <bob@example.net>"},
			{"To", "alice@example.org"},
			{"Subject", "Lunch on Friday?"},
			{"Message-ID", "<lunch.1@example.net>"},
		},
	}
}

// withField returns h with the first field named name replaced by value
// (added when absent; dropped when value is "-").
func withField(h []Field, name, value string) []Field {
	out := slices.Clone(h)
	for i, f := range out {
		if strings.EqualFold(f.Name, name) {
			if value == "-" {
				return slices.Delete(out, i, i+1)
			}
			out[i].Value = value
			return out
		}
	}
	if value == "-" {
		return out
	}
	return append(out, Field{name, value})
}

// written lists every field Compose may write, with whether it always does.
var written = map[string]bool{
	"Date":                      true,
	"From":                      true,
	"To":                        true,
	"Subject":                   true,
	"Message-Id":                true,
	"In-Reply-To":               false,
	"References":                false,
	"Auto-Submitted":            true,
	"X-Allow-Auto-Reply":        true,
	"X-Auto-Response-Suppress":  true,
	"Precedence":                true,
	"Mime-Version":              true,
	"Content-Type":              true,
	"Content-Transfer-Encoding": false,
}

// part is one decoded text part of a reply.
type part struct {
	contentType string
	encoding    string
	body        string
}

// parsed is a reply read back with go-message.
type parsed struct {
	header mail.Header
	parts  []part
}

// checkMessage reads msg back and checks its form: CRLF lines only, no
// line over 998 octets, only the fields Compose writes, each once, the
// required ones present.
func checkMessage(msg []byte) (parsed, error) {
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	if end < 0 {
		return parsed{}, errors.New("no end of header")
	}
	for i, line := range strings.Split(string(msg[:end+2]), "\r\n") {
		if line == "" {
			continue
		}
		if strings.ContainsAny(line, "\r\n") {
			return parsed{}, fmt.Errorf("header line %d %q has a bare CR or LF", i, line)
		}
		if len(line) > 998 {
			return parsed{}, fmt.Errorf("header line %d is %d octets", i, len(line))
		}
		if i == 0 && (line[0] == ' ' || line[0] == '\t') {
			return parsed{}, fmt.Errorf("header starts with a continuation line")
		}
	}
	for i, c := range msg {
		if c == '\n' && (i == 0 || msg[i-1] != '\r') || c == '\r' && (i+1 == len(msg) || msg[i+1] != '\n') {
			return parsed{}, fmt.Errorf("bare CR or LF at octet %d", i)
		}
	}

	mr, err := mail.CreateReader(bytes.NewReader(msg))
	if err != nil {
		return parsed{}, fmt.Errorf("mail.CreateReader: %v", err)
	}
	p := parsed{header: mr.Header}
	count := map[string]int{}
	fs := mr.Header.Fields()
	for fs.Next() {
		k := fs.Key()
		if _, ok := written[k]; !ok {
			return parsed{}, fmt.Errorf("unexpected field %q: %q", k, fs.Value())
		}
		if count[k]++; count[k] > 1 {
			return parsed{}, fmt.Errorf("field %q appears twice", k)
		}
	}
	for k, always := range written {
		if always && count[k] == 0 {
			return parsed{}, fmt.Errorf("field %q is missing", k)
		}
	}
	if (count["In-Reply-To"] == 0) != (count["References"] == 0) {
		return parsed{}, fmt.Errorf("In-Reply-To without References or the other way")
	}
	for {
		mp, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return parsed{}, fmt.Errorf("NextPart: %v", err)
		}
		h, ok := mp.Header.(*mail.InlineHeader)
		if !ok {
			return parsed{}, fmt.Errorf("part header is %T, want *mail.InlineHeader", mp.Header)
		}
		ct, params, err := h.ContentType()
		if err != nil {
			return parsed{}, fmt.Errorf("part Content-Type: %v", err)
		}
		if params["charset"] != "utf-8" {
			return parsed{}, fmt.Errorf("part charset %q, want utf-8", params["charset"])
		}
		b, err := io.ReadAll(mp.Body)
		if err != nil {
			return parsed{}, fmt.Errorf("read part: %v", err)
		}
		p.parts = append(p.parts, part{ct, h.Get("Content-Transfer-Encoding"), string(b)})
	}
	if len(p.parts) == 0 {
		return parsed{}, errors.New("no parts")
	}
	return p, nil
}

func mustCompose(t *testing.T, s Settings, o Original) parsed {
	t.Helper()
	r, err := Compose(s, o, testNow, "mx.example.org")
	if err != nil {
		t.Fatalf("Compose: %v", err)
	}
	p, err := checkMessage(r.Message)
	if err != nil {
		t.Fatalf("Compose produced a bad message: %v\n%s", err, r.Message)
	}
	return p
}

func TestSubject(t *testing.T) {
	long := strings.Repeat("x", 500)
	longUTF8 := strings.Repeat("é", 300)
	tests := []struct {
		name    string
		setting string
		orig    string // "-" for no Subject field
		want    string
	}{
		{"default", "", "Lunch on Friday?", "Auto: Lunch on Friday?"},
		{"setting wins", "Away until July", "Lunch", "Away until July"},
		{"setting blank", "  \t ", "Lunch", "Auto: Lunch"},
		{"no stacking", "", "Auto: Lunch", "Auto: Lunch"},
		{"no stacking, any case, many", "", "auto:AUTO:  Auto: Lunch", "Auto: Lunch"},
		{"Auto inside kept", "", "Re: Auto: Lunch", "Auto: Re: Auto: Lunch"},
		{"absent", "", "-", "Automated reply"},
		{"empty", "", "", "Automated reply"},
		{"blank", "", " \t ", "Automated reply"},
		{"only Auto:", "", "Auto:", "Automated reply"},
		{"folded", "", "Lunch\r\n on\r\n\tFriday", "Auto: Lunch on Friday"},
		{"utf-8 q", "", "=?utf-8?q?Gr=C3=BC=C3=9Fe?=", "Auto: Grüße"},
		{"utf-8 b folded", "", "=?UTF-8?B?w4lsw6k=?=\r\n =?utf-8?q?phant?=", "Auto: Éléphant"},
		{"latin-1", "", "=?iso-8859-1?q?caf=E9?= au lait", "Auto: café au lait"},
		{"koi8-r", "", "=?koi8-r?b?8NLJ18XU?=", "Auto: Привет"},
		{"encoded Auto:", "", "=?utf-8?q?Auto:_Gr=C3=BC=C3=9Fe?=", "Auto: Grüße"},
		{"unknown charset kept raw", "", "=?x-nonesuch?q?abc?=", "Auto: =?x-nonesuch?q?abc?="},
		{"decodes to an encoded-word", "", "=?utf-8?q?=3D=3Futf-8=3Fq=3Fx=3F=3D?=", "Auto: =?utf-8?q?x?="},
		{"raw 8-bit", "", "caf\xe9", "Auto: caf\uFFFD"},
		{"raw utf-8", "", "Grüße", "Auto: Grüße"},
		{"CRLF injection", "", "hi\r\nBcc: eve@evil.example", "Auto: hi Bcc: eve@evil.example"},
		{"bare LF injection", "", "hi\nBcc: eve@evil.example", "Auto: hi Bcc: eve@evil.example"},
		{"encoded CRLF injection", "", "=?utf-8?q?hi=0D=0ABcc:_eve@evil.example?=", "Auto: hi Bcc: eve@evil.example"},
		{"encoded NUL and C1", "", "=?utf-8?q?a=00b=C2=85c?=", "Auto: a b c"},
		{"setting CRLF injection", "Away\r\nBcc: eve@evil.example", "x", "Away Bcc: eve@evil.example"},
		{"setting line separator", "Away\u2028Bcc: x", "x", "Away Bcc: x"},
		{"capped", "", long, "Auto: " + strings.Repeat("x", 191) + "..."},
		{"capped on a rune boundary", "", longUTF8, "Auto: " + strings.Repeat("é", 191) + "..."},
		{"setting capped", long, "x", strings.Repeat("x", 197) + "..."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := baseSettings()
			s.Subject = tt.setting
			o := baseOriginal()
			o.Header = withField(o.Header, "Subject", tt.orig)
			p := mustCompose(t, s, o)
			got, err := p.header.Subject()
			if err != nil {
				t.Fatalf("Subject() error %v", err)
			}
			if got != tt.want {
				t.Errorf("Compose(%s) Subject = %q, want %q", tt.name, got, tt.want)
			}
			if n := utf8.RuneCountInString(got); n > maxSubject {
				t.Errorf("Compose(%s) Subject has %d characters, want at most %d", tt.name, n, maxSubject)
			}
			raw := p.header.Get("Subject")
			for i := 0; i < len(raw); i++ {
				if raw[i] >= 0x80 {
					t.Errorf("Compose(%s) raw Subject %q is not ASCII", tt.name, raw)
					break
				}
			}
		})
	}
}

func TestReferences(t *testing.T) {
	var many, manyLong []string
	for i := range 50 {
		many = append(many, fmt.Sprintf("<r%d@example.net>", i))
	}
	for i := range 30 {
		manyLong = append(manyLong, fmt.Sprintf("<%03d%s@example.net>", i, strings.Repeat("l", 230)))
	}
	ids := func(s []string) []string {
		out := make([]string, len(s))
		for i, v := range s {
			out[i] = strings.Trim(v, "<>")
		}
		return out
	}
	tests := []struct {
		name                string
		msgID, refs, irt    string // "-" for absent
		wantIRT             string // "" for absent
		wantRefs            []string
		wantCount, wantSize int // when wantRefs is nil but a References is expected
	}{
		{name: "no Message-ID", msgID: "-", refs: "<a@b>", irt: "<a@b>"},
		{name: "malformed Message-ID", msgID: "<no-at-sign>", refs: "-", irt: "-"},
		{name: "Message-ID with a blank", msgID: "<m @example.net>", refs: "-", irt: "-"},
		{name: "Message-ID too long", msgID: "<" + strings.Repeat("m", 300) + "@example.net>", refs: "-", irt: "-"},
		{name: "Message-ID only", msgID: "<m@example.net>", refs: "-", irt: "-",
			wantIRT: "m@example.net", wantRefs: []string{"m@example.net"}},
		{name: "Message-ID with comment and blanks", msgID: " (sent by x) <m@example.net> ", refs: "-", irt: "-",
			wantIRT: "m@example.net", wantRefs: []string{"m@example.net"}},
		{name: "domain literal", msgID: "<m@[192.0.2.1]>", refs: "-", irt: "-",
			wantIRT: "m@[192.0.2.1]", wantRefs: []string{"m@[192.0.2.1]"}},
		{name: "References", msgID: "<m@x>", refs: "<a@x> <b@x>", irt: "<b@x>",
			wantIRT: "m@x", wantRefs: []string{"a@x", "b@x", "m@x"}},
		{name: "In-Reply-To when no References", msgID: "<m@x>", refs: "-", irt: "<b@x>",
			wantIRT: "m@x", wantRefs: []string{"b@x", "m@x"}},
		{name: "folded References", msgID: "<m@x>", refs: "<a@x>\r\n <b@x>\r\n\t<c@x>", irt: "-",
			wantIRT: "m@x", wantRefs: []string{"a@x", "b@x", "c@x", "m@x"}},
		{name: "duplicates dropped", msgID: "<m@x>", refs: "<a@x> <m@x> <a@x> <b@x>", irt: "-",
			wantIRT: "m@x", wantRefs: []string{"a@x", "b@x", "m@x"}},
		{name: "junk skipped", msgID: "<m@x>", refs: "junk <a@x> <bad> <<b@x> <c@x", irt: "-",
			wantIRT: "m@x", wantRefs: []string{"a@x", "b@x", "m@x"}},
		{name: "count capped: first and last", msgID: "<m@x>", refs: strings.Join(many, " "), irt: "-",
			wantIRT: "m@x", wantRefs: append(append([]string{"r0@example.net"}, ids(many[len(many)-18:])...), "m@x")},
		{name: "length capped: first and last", msgID: "<m@x>", refs: strings.Join(manyLong, "\r\n "), irt: "-",
			wantIRT: "m@x", wantRefs: append(append([]string{ids(manyLong)[0]}, ids(manyLong[len(manyLong)-7:])...), "m@x")},
		{name: "CRLF injection in Message-ID", msgID: "<m@x>\r\nBcc: eve@evil.example", refs: "-", irt: "-",
			wantIRT: "m@x", wantRefs: []string{"m@x"}},
		{name: "CRLF injection inside Message-ID", msgID: "<m@x\r\nBcc: eve@evil.example>", refs: "-", irt: "-"},
		{name: "CRLF injection in References", msgID: "<m@x>", refs: "<a@x>\r\nBcc: eve@evil.example\r\n <b@x>", irt: "-",
			wantIRT: "m@x", wantRefs: []string{"a@x", "b@x", "m@x"}},
		{name: "huge References", msgID: "<m@x>", refs: "<first@x> " + strings.Repeat("<r@x> ", 100000) + "<last@x>", irt: "-",
			wantIRT: "m@x", wantRefs: []string{"first@x", "r@x", "last@x", "m@x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := baseOriginal()
			o.Header = withField(o.Header, "Message-ID", tt.msgID)
			o.Header = withField(o.Header, "References", tt.refs)
			o.Header = withField(o.Header, "In-Reply-To", tt.irt)
			p := mustCompose(t, baseSettings(), o)
			irt, err := p.header.MsgIDList("In-Reply-To")
			if err != nil {
				t.Fatalf("In-Reply-To %q: %v", p.header.Get("In-Reply-To"), err)
			}
			if got := strings.Join(irt, " "); got != tt.wantIRT {
				t.Errorf("Compose(%s) In-Reply-To = %q, want %q", tt.name, got, tt.wantIRT)
			}
			refs, err := p.header.MsgIDList("References")
			if err != nil {
				t.Fatalf("References %q: %v", p.header.Get("References"), err)
			}
			if !slices.Equal(refs, tt.wantRefs) {
				t.Errorf("Compose(%s) References = %q, want %q", tt.name, refs, tt.wantRefs)
			}
			if n, size := len(refs), len(p.header.Get("References")); n > maxRefs || size > maxRefsLen {
				t.Errorf("Compose(%s) References has %d ids in %d octets, want at most %d in %d", tt.name, n, size, maxRefs, maxRefsLen)
			}
		})
	}
}

func TestBody(t *testing.T) {
	tests := []struct {
		name, body, html string
		wantEnc          []string // per part
		wantText         string
	}{
		{name: "ascii", body: "Away.\nBack soon.", wantEnc: []string{"7bit"}, wantText: "Away.\r\nBack soon.\r\n"},
		{name: "CRLF and CR line breaks", body: "a\r\nb\rc\n", wantEnc: []string{"7bit"}, wantText: "a\r\nb\r\nc\r\n"},
		{name: "utf-8", body: "Bin weg. Grüße\n", wantEnc: []string{"quoted-printable"}, wantText: "Bin weg. Grüße\r\n"},
		{name: "long line", body: strings.Repeat("word ", 40) + "end\n", wantEnc: []string{"quoted-printable"}, wantText: strings.Repeat("word ", 40) + "end\r\n"},
		{name: "trailing blank", body: "signed \n", wantEnc: []string{"quoted-printable"}, wantText: "signed \r\n"},
		{name: "control characters dropped", body: "a\x00b\x1bc\x7fd\n", wantEnc: []string{"7bit"}, wantText: "abcd\r\n"},
		{name: "invalid utf-8 replaced", body: "caf\xe9\n", wantEnc: []string{"quoted-printable"}, wantText: "caf\uFFFD\r\n"},
		{name: "header lookalike stays in the body", body: "\r\n\r\nBcc: eve@evil.example\r\n", wantEnc: []string{"7bit"}, wantText: "\r\n\r\nBcc: eve@evil.example\r\n"},
		{name: "boundary lookalike", body: "--=_\n", html: "<p>=_</p>", wantEnc: []string{"7bit", "7bit"}, wantText: "--=_\r\n"},
		{name: "html", body: "Away.", html: "<p>Away. <b>Grüße</b></p>", wantEnc: []string{"7bit", "quoted-printable"}, wantText: "Away.\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := baseSettings()
			s.Body, s.HTMLBody = tt.body, tt.html
			p := mustCompose(t, s, baseOriginal())
			var encs []string
			for _, pt := range p.parts {
				encs = append(encs, pt.encoding)
			}
			if !slices.Equal(encs, tt.wantEnc) {
				t.Errorf("Compose(%s) encodings = %q, want %q", tt.name, encs, tt.wantEnc)
			}
			if got := p.parts[0].body; got != tt.wantText {
				t.Errorf("Compose(%s) text = %q, want %q", tt.name, got, tt.wantText)
			}
			if got := p.parts[0].contentType; got != "text/plain" {
				t.Errorf("Compose(%s) first part is %q, want text/plain", tt.name, got)
			}
			ct, _, _ := p.header.ContentType()
			if tt.html == "" {
				if ct != "text/plain" || len(p.parts) != 1 {
					t.Errorf("Compose(%s) is %s with %d parts, want text/plain with 1", tt.name, ct, len(p.parts))
				}
				return
			}
			if ct != "multipart/alternative" || len(p.parts) != 2 {
				t.Fatalf("Compose(%s) is %s with %d parts, want multipart/alternative with 2", tt.name, ct, len(p.parts))
			}
			if got, want := p.parts[1].contentType, "text/html"; got != want {
				t.Errorf("Compose(%s) second part is %q, want %q", tt.name, got, want)
			}
			if got, want := p.parts[1].body, strings.ReplaceAll(normalizeBody(tt.html), "\n", "\r\n"); got != want {
				t.Errorf("Compose(%s) html = %q, want %q", tt.name, got, want)
			}
		})
	}
}

func TestHeader(t *testing.T) {
	tests := []struct {
		name     string
		fromName string
		address  string
		mailFrom string
		wantFrom string // decoded display name
		wantTo   string
		wantRaw  string // a substring of the raw From field, "" to skip
	}{
		{"plain", "Alice Example", "alice@example.org", "bob@example.net", "Alice Example", "bob@example.net", `"Alice Example" <alice@example.org>`},
		{"no name", "", "alice@example.org", "<bob@example.net>", "", "bob@example.net", "<alice@example.org>"},
		{"utf-8 name", "Zoë Ångström", "zoe@example.org", "bob@example.net", "Zoë Ångström", "bob@example.net", "=?utf-8?"},
		{"name with specials", `Doe, "John" <x>`, "j@example.org", "bob@example.net", `Doe, "John" <x>`, "bob@example.net", ""},
		{"name injection", "Eve\r\nBcc: eve@evil.example", "e@example.org", "bob@example.net", "Eve Bcc: eve@evil.example", "bob@example.net", ""},
		{"name capped", strings.Repeat("n", 300), "n@example.org", "bob@example.net", strings.Repeat("n", 97) + "...", "bob@example.net", ""},
		{"utf-8 sender", "", "alice@example.org", "jörg@example.net", "", "jörg@example.net", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := baseSettings()
			s.FromName, s.Address = tt.fromName, tt.address
			o := baseOriginal()
			o.MailFrom = tt.mailFrom
			p := mustCompose(t, s, o)
			from, err := p.header.AddressList("From")
			if err != nil || len(from) != 1 {
				t.Fatalf("From %q: %v, %d addresses", p.header.Get("From"), err, len(from))
			}
			if from[0].Name != tt.wantFrom || from[0].Address != tt.address {
				t.Errorf("Compose(%s) From = %q <%s>, want %q <%s>", tt.name, from[0].Name, from[0].Address, tt.wantFrom, tt.address)
			}
			if tt.wantRaw != "" && !strings.Contains(p.header.Get("From"), tt.wantRaw) {
				t.Errorf("Compose(%s) raw From = %q, want it to contain %q", tt.name, p.header.Get("From"), tt.wantRaw)
			}
			to, err := p.header.AddressList("To")
			if err != nil || len(to) != 1 {
				t.Fatalf("To %q: %v, %d addresses", p.header.Get("To"), err, len(to))
			}
			if to[0].Address != tt.wantTo {
				t.Errorf("Compose(%s) To = %q, want %q", tt.name, to[0].Address, tt.wantTo)
			}
		})
	}
}

func TestFixedFields(t *testing.T) {
	p := mustCompose(t, baseSettings(), baseOriginal())
	for _, f := range []struct{ name, want string }{
		{"Auto-Submitted", "auto-replied"},
		{"X-Allow-Auto-Reply", "no"},
		{"X-Auto-Response-Suppress", "All"},
		{"Precedence", "bulk"},
		{"Mime-Version", "1.0"},
		{"Date", "Wed, 01 Jul 2026 09:30:00 +0200"},
	} {
		if got := p.header.Get(f.name); got != f.want {
			t.Errorf("Compose() %s = %q, want %q", f.name, got, f.want)
		}
	}
	d, err := p.header.Date()
	if err != nil || !d.Equal(testNow) {
		t.Errorf("Compose() Date = %v (%v), want %v", d, err, testNow)
	}
	id, err := p.header.MessageID()
	if err != nil || !strings.HasSuffix(id, "@mx.example.org") {
		t.Errorf("Compose() Message-ID = %q (%v), want one @mx.example.org", id, err)
	}
}

func TestEnvelope(t *testing.T) {
	tests := []struct {
		name         string
		fromUser     bool
		mailFrom     string
		wantMailFrom string
		wantRcpt     string
	}{
		{"null sender by default", false, "<bob@example.net>", "", "bob@example.net"},
		{"user as sender", true, "bob@example.net", "alice@example.org", "bob@example.net"},
		{"blanks around", false, " <bob@example.net> ", "", "bob@example.net"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := baseSettings()
			s.EnvelopeFromUser = tt.fromUser
			o := baseOriginal()
			o.MailFrom = tt.mailFrom
			r, err := Compose(s, o, testNow, "")
			if err != nil {
				t.Fatalf("Compose(%s): %v", tt.name, err)
			}
			if r.MailFrom != tt.wantMailFrom || r.Rcpt != tt.wantRcpt {
				t.Errorf("Compose(%s) envelope = %q -> %q, want %q -> %q", tt.name, r.MailFrom, r.Rcpt, tt.wantMailFrom, tt.wantRcpt)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name     string
		address  string
		mailFrom string
		host     string
		want     error
	}{
		{"empty sender", "alice@example.org", "", "mx.example.org", ErrNullSender},
		{"null sender", "alice@example.org", "<>", "mx.example.org", ErrNullSender},
		{"null sender with blanks", "alice@example.org", " <> ", "mx.example.org", ErrNullSender},
		{"sender without @", "alice@example.org", "MAILER-DAEMON", "mx.example.org", ErrAddress},
		{"sender with a blank", "alice@example.org", "bob @example.net", "mx.example.org", ErrAddress},
		{"sender with a name", "alice@example.org", "Bob <bob@example.net>", "mx.example.org", ErrAddress},
		{"sender list", "alice@example.org", "bob@example.net, eve@evil.example", "mx.example.org", ErrAddress},
		{"sender injection", "alice@example.org", "bob@example.net\r\nBcc: eve@evil.example", "mx.example.org", ErrAddress},
		{"sender bare LF", "alice@example.org", "bob@example.net\nBcc:eve@evil.example", "mx.example.org", ErrAddress},
		{"sender NUL", "alice@example.org", "bob@exa\x00mple.net", "mx.example.org", ErrAddress},
		{"sender too long", "alice@example.org", strings.Repeat("b", 250) + "@example.net", "mx.example.org", ErrAddress},
		{"sender quoted local part", "alice@example.org", `"b o b"@example.net`, "mx.example.org", ErrAddress},
		{"sender comment", "alice@example.org", "bob@example.net(x)", "mx.example.org", ErrAddress},
		{"sender invalid utf-8", "alice@example.org", "b\xffb@example.net", "mx.example.org", ErrAddress},
		{"no user", "", "bob@example.net", "mx.example.org", ErrAddress},
		{"user injection", "alice@example.org\r\nBcc: eve@evil.example", "bob@example.net", "mx.example.org", ErrAddress},
		{"host injection", "alice@example.org", "bob@example.net", "mx\r\nBcc: eve@evil.example", ErrAddress},
		{"host with a blank", "alice@example.org", "bob@example.net", "mx example", ErrAddress},
		{"host from a literal address", "alice@[192.0.2.1]", "bob@example.net", "", ErrAddress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := baseSettings()
			s.Address = tt.address
			o := baseOriginal()
			o.MailFrom = tt.mailFrom
			r, err := Compose(s, o, testNow, tt.host)
			if !errors.Is(err, tt.want) {
				t.Errorf("Compose(%s) error = %v, want %v", tt.name, err, tt.want)
			}
			if r.Message != nil {
				t.Errorf("Compose(%s) returned a message with an error", tt.name)
			}
		})
	}
}

// TestInjection puts a header-starting line into every input at once and
// checks that the reply has only the fields Compose writes.
func TestInjection(t *testing.T) {
	const evil = "\r\nBcc: eve@evil.example\r\n\r\nspam"
	for _, sep := range []string{"\r\n", "\n", "\r", "\u2028", "\u0085", "\x00"} {
		e := strings.ReplaceAll(evil, "\r\n", sep)
		s := Settings{
			Address:  "alice@example.org",
			FromName: "Alice" + e,
			Subject:  "Away" + e,
			Body:     "body" + e,
			HTMLBody: "<p>html</p>" + e,
		}
		o := Original{
			MailFrom: "bob@example.net",
			Header: []Field{
				{"Subject", "Lunch" + e},
				{"Message-ID", "<m@x>" + e},
				{"References", "<a@x>" + e + " <b@x>"},
				{"In-Reply-To", "<c@x>" + e},
			},
		}
		for _, subject := range []string{s.Subject, ""} {
			s.Subject = subject
			r, err := Compose(s, o, testNow, "mx.example.org")
			if err != nil {
				t.Fatalf("Compose(separator %q): %v", sep, err)
			}
			if _, err := checkMessage(r.Message); err != nil {
				t.Errorf("Compose(separator %q): %v\n%s", sep, err, r.Message)
			}
			hdr := r.Message[:bytes.Index(r.Message, []byte("\r\n\r\n"))]
			if bytes.Contains(bytes.ToLower(hdr), []byte("\nbcc:")) {
				t.Errorf("Compose(separator %q) header has a Bcc field:\n%s", sep, hdr)
			}
		}
	}
}

func TestDeterministic(t *testing.T) {
	s, o := baseSettings(), baseOriginal()
	s.HTMLBody = "<p>Away</p>"
	a, err := Compose(s, o, testNow, "mx.example.org")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Compose(s, o, testNow, "mx.example.org")
	if !bytes.Equal(a.Message, b.Message) {
		t.Errorf("Compose() twice with the same inputs gave different bytes")
	}
	idOf := func(r Reply) string {
		h, err := readHeader(r.Message)
		if err != nil {
			t.Fatal(err)
		}
		return h.Get("Message-Id")
	}
	c, _ := Compose(s, o, testNow.Add(time.Nanosecond), "mx.example.org")
	o.MailFrom = "carol@example.net"
	d, _ := Compose(s, o, testNow, "mx.example.org")
	if idOf(a) == idOf(c) || idOf(a) == idOf(d) {
		t.Errorf("Compose() Message-IDs %s, %s, %s: want different ones for another time or sender", idOf(a), idOf(c), idOf(d))
	}
}

func readHeader(msg []byte) (message.Header, error) {
	e, err := message.Read(bytes.NewReader(msg))
	if err != nil {
		return message.Header{}, err
	}
	return e.Header, nil
}
