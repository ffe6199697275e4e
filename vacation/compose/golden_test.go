package compose

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.eml")

// TestGolden composes a few typical and hostile replies and compares them
// byte for byte with testdata/NAME.golden.eml. Run
// go test ./vacation/compose -update to rewrite them, and review the diff
// like code.
func TestGolden(t *testing.T) {
	refs := make([]string, 0, 40)
	for i := range 40 {
		refs = append(refs, "<thread."+strings.Repeat("x", i%7)+string(rune('a'+i%26))+"@lists.example.net>")
	}
	tests := []struct {
		name string
		s    Settings
		o    Original
	}{
		{"plain", baseSettings(), baseOriginal()},
		{"utf8", Settings{
			Address:  "zoe@example.org",
			FromName: "Zoë Ångström",
			Body:     "Ich bin bis zum 14. Juli nicht im Büro.\nIhre Nachricht wird danach gelesen. Dringendes bitte an mein Team: team@example.org, das sich gern um alles kümmert.\n\nGrüße, Zoë",
		}, Original{
			MailFrom: "<jürgen@example.net>",
			Header: []Field{
				{"Subject", "=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_M=C3=BCnchen?=\r\n =?iso-8859-1?q?_und_K=F6ln?="},
				{"Message-ID", "<CAF=+x7@mail.example.net>"},
			},
		}},
		{"html", Settings{
			Address:  "alice@example.org",
			FromName: "Alice Example",
			Subject:  "Out of office until 14 July",
			Body:     "I am away until 14 July.",
			HTMLBody: "<p>I am away until <b>14 July</b>.</p>\n<p>Your mail will be read when I return; until then please write to <a href=\"mailto:team@example.org\">the team</a>.</p>",
		}, baseOriginal()},
		{"thread", baseSettings(), Original{
			MailFrom: "bob@example.net",
			Header: []Field{
				{"Subject", "Re: Auto: Re: [list] weekly sync"},
				{"Message-ID", "<reply.41@example.net>"},
				{"In-Reply-To", "<thread.a@lists.example.net>"},
				{"References", strings.Join(refs, "\r\n ")},
			},
		}},
		{"no-message-id", Settings{
			Address:          "alice@example.org",
			Body:             "Away.",
			EnvelopeFromUser: true,
		}, Original{
			MailFrom: "bob@example.net",
			Header:   []Field{{"From", "bob@example.net"}},
		}},
		{"hostile", Settings{
			Address:  "alice@example.org",
			FromName: "Alice\r\nBcc: eve@evil.example",
			Body:     "Away.\r\n.\r\nBcc: eve@evil.example\r\n",
		}, Original{
			MailFrom: "<bob@example.net>",
			Header: []Field{
				{"Subject", "=?utf-8?q?hi=0D=0ABcc:_eve@evil.example=0D=0A=0D=0Abody?= =?utf-8?q?=3D=3Futf-8=3Fq=3Fx=3F=3D?="},
				{"Message-ID", "<m@example.net>\r\nBcc: eve@evil.example"},
				{"References", "<a@example.net>\r\nBcc: eve@evil.example\r\n <b@example.net> <c @example.net> <" + strings.Repeat("z", 400) + "@example.net>"},
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Compose(tt.s, tt.o, testNow, "mx.example.org")
			if err != nil {
				t.Fatalf("Compose(%s): %v", tt.name, err)
			}
			if _, err := checkMessage(r.Message); err != nil {
				t.Fatalf("Compose(%s) produced a bad message: %v\n%s", tt.name, err, r.Message)
			}
			path := filepath.Join("testdata", tt.name+".golden.eml")
			if *update {
				if err := os.WriteFile(path, r.Message, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./vacation/compose -update)", err)
			}
			if !bytes.Equal(r.Message, want) {
				t.Errorf("Compose(%s) =\n%s\nwant (%s)\n%s", tt.name, r.Message, path, want)
			}
		})
	}
}
