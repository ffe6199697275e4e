package compose

import (
	"errors"
	"strings"
	"testing"
)

// FuzzCompose feeds arbitrary settings and original header values to
// Compose. It must not panic, and must either fail with one of its errors
// or return a message that go-message reads back, whose header lines end
// in CRLF and hold only the fields Compose writes (each once, the required
// ones present), and whose text part is the body as normalized.
func FuzzCompose(f *testing.F) {
	f.Add("alice@example.org", "Alice", "", "Away.", "", "<bob@example.net>", "Lunch", "<m@example.net>", "<a@x> <b@x>", "<b@x>", "mx.example.org")
	f.Add("zoe@example.org", "Zoë", "Weg", "Grüße\r\n", "<p>x</p>", "jürgen@example.net", "=?utf-8?q?Gr=C3=BC=C3=9Fe?=", "<m@[1.2.3.4]>", "", "", "")
	f.Add("a@b", "x\r\nBcc: e@v", "y\nBcc: e@v", "\r\n\r\nBcc: e@v", "--=_", "b@c", "=?utf-8?q?a=0D=0ABcc:_e@v?=", "<m@x>\r\nBcc: e@v", "<a@x>\r\nBcc: e@v", "<<<>>>", "h")
	f.Add("a@b", "", "", "", "", "<>", "Auto: Auto:", "<x>", "<a@b", "", "")
	f.Add("a@b", "=?utf-8?q?x?=", "=?", strings.Repeat("x", 200), "", "b@c", strings.Repeat("é", 300), strings.Repeat("<a@b>", 50), strings.Repeat("<r@x> ", 40), "", "")
	f.Fuzz(func(t *testing.T, address, fromName, subject, body, html, mailFrom, origSubject, msgID, refs, irt, host string) {
		s := Settings{Address: address, FromName: fromName, Subject: subject, Body: body, HTMLBody: html}
		o := Original{MailFrom: mailFrom, Header: []Field{
			{"Subject", origSubject},
			{"Message-ID", msgID},
			{"References", refs},
			{"In-Reply-To", irt},
		}}
		r, err := Compose(s, o, testNow, host)
		if err != nil {
			if !errors.Is(err, ErrNullSender) && !errors.Is(err, ErrAddress) {
				t.Fatalf("Compose error %v is neither ErrNullSender nor ErrAddress", err)
			}
			return
		}
		p, err := checkMessage(r.Message)
		if err != nil {
			t.Fatalf("Compose produced a bad message: %v\n%q", err, r.Message)
		}
		if r.Rcpt == "" {
			t.Fatalf("Compose returned no recipient")
		}
		if got, want := p.parts[0].body, strings.ReplaceAll(normalizeBody(body), "\n", "\r\n"); got != want {
			t.Fatalf("text part = %q, want %q", got, want)
		}
		if n := len(p.parts); n != 1 && normalizeBody(html) == "" || n != 2 && normalizeBody(html) != "" {
			t.Fatalf("%d parts for html %q", n, html)
		}
		if _, err := p.header.Subject(); err != nil {
			t.Fatalf("Subject %q does not decode: %v", p.header.Get("Subject"), err)
		}
		if refs, err := p.header.MsgIDList("References"); err != nil || len(refs) > maxRefs {
			t.Fatalf("References %q: %d ids, %v", p.header.Get("References"), len(refs), err)
		}
	})
}
