package senderauth

import (
	"strings"
	"testing"

	"github.com/replygate/replygate/vacation/compose"
)

// fields splits a raw header block, lines joined by "\n" and folded lines
// starting with a space or a tab, into fields as a milter hands them over:
// name, and the raw value with its folding kept as CRLF.
func fields(raw string) []compose.Field {
	var fs []compose.Field
	for _, line := range strings.Split(strings.TrimLeft(raw, "\n"), "\n") {
		if line == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			fs[len(fs)-1].Value += "\r\n" + line
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		fs = append(fs, compose.Field{Name: name, Value: strings.TrimPrefix(value, " ")})
	}
	return fs
}

// Postfix on mail.example.org with OpenDKIM and OpenDMARC: each milter
// inserts its own field at index 1, below Postfix's Received, so the last
// one to run (OpenDMARC, with its dmarc= result) is on top.
const postfixPass = `
Received: from mx.example.com (mx.example.com [192.0.2.25])
	by mail.example.org (Postfix) with ESMTPS id 4VbQ2x1Hm9z9sTq
	for <alice@example.org>; Mon,  3 Jun 2024 09:14:07 +0200 (CEST)
Authentication-Results: mail.example.org; dmarc=pass (p=reject dis=none) header.from=example.com
Authentication-Results: mail.example.org; spf=pass smtp.mailfrom=example.com
DKIM-Filter: OpenDKIM Filter v2.11.0 mail.example.org 4VbQ2x1Hm9z9sTq
Authentication-Results: mail.example.org;
	dkim=pass (2048-bit key; unprotected) header.d=example.com header.i=@example.com header.a=rsa-sha256 header.s=mail header.b="k3Pq0vZb"
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=mail;
	h=From:To:Subject:Date:Message-ID; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;
	b=k3Pq0vZb
From: Bob <bob@example.com>
To: alice@example.org
Subject: Lunch
Message-ID: <20240603071405.12345@mx.example.com>
`

// The same MTA for a sender whose domain publishes no DMARC record:
// OpenDMARC says dmarc=none on top, and OpenDKIM's dkim=pass is in a
// field further down.
const postfixNoDMARC = `
Received: from smtp.small.example (smtp.small.example [198.51.100.7])
	by mail.example.org (Postfix) with ESMTPS id 4VbQ3c0Lq2z9sTt
	for <alice@example.org>; Mon,  3 Jun 2024 09:20:11 +0200 (CEST)
Authentication-Results: mail.example.org; dmarc=none (p=none dis=none) header.from=small.example
Authentication-Results: mail.example.org; spf=pass smtp.mailfrom=small.example
DKIM-Filter: OpenDKIM Filter v2.11.0 mail.example.org 4VbQ3c0Lq2z9sTt
Authentication-Results: mail.example.org;
	dkim=pass (1024-bit key; unprotected) header.d=small.example header.i=@small.example header.b="Zx81PqQa"
From: carol@small.example
Subject: hi
`

// OpenDKIM alone, a failed signature.
const opendkimFail = `
Received: from mx.example.com (mx.example.com [192.0.2.25])
	by mail.example.org (Postfix) with ESMTPS id 4VbQ4k2Tn5z9sTv
	for <alice@example.org>; Mon,  3 Jun 2024 09:31:40 +0200 (CEST)
DKIM-Filter: OpenDKIM Filter v2.11.0 mail.example.org 4VbQ4k2Tn5z9sTv
Authentication-Results: mail.example.org;
	dkim=fail reason="signature verification failed" (2048-bit key; secure) header.d=example.com header.i=@example.com header.b="k3Pq0vZb"
From: bob@example.com
`

// Gmail: one field with every result, an ARC result whose comment repeats
// the others, and the sender's address in comments.
const gmailPass = `
Delivered-To: alice@gmail.com
Received: by 2002:a05:6a10:8a4d:b0:4c1:2f1a:1b2 with SMTP id u13csp1529871pxs;
        Mon, 3 Jun 2024 00:14:08 -0700 (PDT)
ARC-Authentication-Results: i=1; mx.google.com;
       dkim=pass header.i=@example.com header.s=20230601 header.b=VkN+0rjI;
       spf=pass (google.com: domain of bob@example.com designates 209.85.220.41 as permitted sender) smtp.mailfrom=bob@example.com;
       dmarc=pass (p=NONE sp=NONE dis=NONE) header.from=example.com
Authentication-Results: mx.google.com;
       dkim=pass header.i=@example.com header.s=20230601 header.b=VkN+0rjI;
       arc=pass (i=1 spf=pass spfdomain=example.com dkim=pass dkdomain=example.com dmarc=pass fromdomain=example.com);
       spf=pass (google.com: domain of bob@example.com designates 209.85.220.41 as permitted sender) smtp.mailfrom=bob@example.com;
       dmarc=pass (p=NONE sp=NONE dis=NONE) header.from=example.com
From: Bob <bob@example.com>
`

// Gmail receiving a spoof: SPF fails, DKIM is absent.
const gmailFail = `
Authentication-Results: mx.google.com;
       spf=fail (google.com: domain of spoof@example.com does not designate 203.0.113.9 as permitted sender) smtp.mailfrom=spoof@example.com;
       dmarc=fail (p=REJECT sp=REJECT dis=QUARANTINE) header.from=example.com
From: ceo@example.com
`

// rspamd (or any one-field writer) with every method failing.
const rspamdFail = `
Authentication-Results: mx.example.org;
	dkim=none;
	dmarc=fail reason="SPF not aligned (relaxed), No valid DKIM" header.from=example.com (policy=reject);
	spf=fail (mx.example.org: domain of spoof@example.com does not designate 203.0.113.9 as permitted sender) smtp.mailfrom=spoof@example.com
From: ceo@example.com
`

// Exchange Online: no authserv-id at all.
const microsoft = `
Authentication-Results: spf=pass (sender IP is 40.107.22.55)
 smtp.mailfrom=example.com; dkim=pass (signature was verified)
 header.d=example.com;dmarc=pass action=none header.from=example.com;compauth=pass
 reason=100
Received-SPF: Pass (protection.outlook.com: domain of example.com designates
 40.107.22.55 as permitted sender) receiver=protection.outlook.com;
 client-ip=40.107.22.55; helo=EUR05-DB8-obe.outbound.protection.outlook.com; pr=C
From: bob@example.com
`

func TestPassed(t *testing.T) {
	tests := []struct {
		name   string
		header string
		id     string
		ok     bool
		why    string
	}{
		{"postfix opendmarc pass", postfixPass, "mail.example.org", true, "dmarc=pass"},
		// The topmost field decides, even though dkim=pass is below it:
		// whether that lower field is ours or the sender's cannot be told.
		{"postfix no dmarc record", postfixNoDMARC, "mail.example.org", false, "dmarc=none"},
		{"opendkim fail", opendkimFail, "mail.example.org", false, "dkim=fail"},
		{"gmail pass", gmailPass, "mx.google.com", true, "dmarc=pass"},
		{"gmail id case", gmailPass, "MX.Google.COM", true, "dmarc=pass"},
		{"gmail fail", gmailFail, "mx.google.com", false, "spf=fail dmarc=fail"},
		{"gmail not trusted", gmailPass, "mail.example.org", false, "no trusted Authentication-Results"},
		{"rspamd all fail", rspamdFail, "mx.example.org", false, "spf=fail dkim=none dmarc=fail"},
		// QUIRK: Exchange Online writes no authserv-id (seen on mail
		// relayed through protection.outlook.com), so its field cannot be
		// told from a forgery and is never trusted.
		{"microsoft no authserv-id", microsoft, "protection.outlook.com", false, "no trusted Authentication-Results"},
		{"no id configured", postfixPass, "", false, "no authserv-id configured"},
		{"no header", "", "mail.example.org", false, "no trusted Authentication-Results"},
		{"forged other id", `
Authentication-Results: mail.example.org.evil.example; dkim=pass header.d=example.com; spf=pass; dmarc=pass
Authentication-Results: example.org; dkim=pass header.d=example.com
From: ceo@example.com
`, "mail.example.org", false, "no trusted Authentication-Results"},
		// RFC 8601 section 5: our MTA should delete fields with its
		// id that came with the message; Postfix does not, so the
		// sender's copy sits below ours and must lose.
		{"forged below ours", `
Received: from evil.example (evil.example [203.0.113.9])
	by mail.example.org (Postfix) with ESMTP id 4VbQ5m3Yp8z9sTx
	for <alice@example.org>; Mon,  3 Jun 2024 09:40:02 +0200 (CEST)
Authentication-Results: mail.example.org; spf=softfail (domain owner discourages use of this host) smtp.mailfrom=example.com
Authentication-Results: mail.example.org; dkim=pass header.d=example.com; dmarc=pass header.from=example.com
Received: from trusted.example.com by mail.example.org; Mon, 3 Jun 2024 09:39:00 +0200
From: ceo@example.com
`, "mail.example.org", false, "spf=softfail"},
		{"forged above other id", `
Authentication-Results: evil.example; dmarc=pass header.from=example.com
Authentication-Results: mail.example.org; dmarc=fail header.from=example.com
`, "mail.example.org", false, "dmarc=fail"},
		{"field name case", `
authentication-results: mail.example.org; spf=pass smtp.mailfrom=example.com
`, "mail.example.org", true, "spf=pass"},
		{"version", `
Authentication-Results: mail.example.org 1; dkim=pass header.d=example.com
`, "mail.example.org", true, "dkim=pass"},
		{"comment before id", `
Authentication-Results: (border) mail.example.org (Postfix); dkim=pass header.d=example.com
`, "mail.example.org", true, "dkim=pass"},
		{"none", `
Authentication-Results: mail.example.org; none
`, "mail.example.org", false, "no spf, dkim or dmarc result"},
		{"other methods only", `
Authentication-Results: mail.example.org; iprev=pass policy.iprev=192.0.2.25; auth=pass smtp.auth=bob
`, "mail.example.org", false, "no spf, dkim or dmarc result"},
		{"second dkim passes", `
Authentication-Results: mail.example.org;
	dkim=fail reason="bad signature" header.d=list.example;
	dkim=pass header.d=example.com;
	spf=neutral smtp.mailfrom=list.example
`, "mail.example.org", true, "dkim=pass"},
		{"upper case results", `
Authentication-Results: mail.example.org; SPF=Pass smtp.mailfrom=example.com
`, "mail.example.org", true, "spf=pass"},
		{"nested comments", `
Authentication-Results: mail.example.org; spf=fail (a (b; dkim=pass) \) c; dmarc=pass) smtp.mailfrom=example.com
`, "mail.example.org", false, "spf=fail"},
		// A MAIL FROM of <"x; dkim=pass"@evil.example> copied into our
		// field must not read as a result of its own.
		{"quoted mailfrom injection", `
Authentication-Results: mail.example.org; spf=fail smtp.mailfrom="x; dkim=pass; dmarc=pass"@evil.example
`, "mail.example.org", false, "spf=fail"},
		// Our own field garbled (an unterminated comment): refuse rather
		// than fall back to the sender's field below.
		{"ours malformed", `
Authentication-Results: mail.example.org; spf=fail (x smtp.mailfrom=example.com
Authentication-Results: mail.example.org; dkim=pass header.d=example.com
`, "mail.example.org", false, "malformed Authentication-Results from mail.example.org: unterminated comment"},
		{"ours unterminated quote", `
Authentication-Results: mail.example.org; spf=fail smtp.mailfrom="x
Authentication-Results: mail.example.org; dkim=pass header.d=example.com
`, "mail.example.org", false, "malformed Authentication-Results from mail.example.org: unterminated quoted-string"},
		{"ours bad version", `
Authentication-Results: mail.example.org 2; dkim=pass header.d=example.com
`, "mail.example.org", false, "malformed Authentication-Results from mail.example.org"},
		{"ours bad result", `
Authentication-Results: mail.example.org; dkim=pass header.d=example.com; garbage
`, "mail.example.org", false, "malformed Authentication-Results from mail.example.org"},
		{"ours too long", "\nAuthentication-Results: mail.example.org; dkim=pass header.d=example.com" + strings.Repeat(" x=y", maxFieldLen/4) + "\n",
			"mail.example.org", false, "malformed Authentication-Results from mail.example.org: too long"},
		{"malformed others skipped", `
Authentication-Results: no semicolon at all
Authentication-Results: ;
Authentication-Results: (unterminated
Authentication-Results: mail.example.org; dkim=pass header.d=example.com
`, "mail.example.org", true, "dkim=pass"},
		{"odd result value", `
Authentication-Results: mail.example.org; dkim=pass"x"@evil.example header.d=example.com
`, "mail.example.org", false, "dkim=invalid"},
		{"many results", "\nAuthentication-Results: mail.example.org" + strings.Repeat("; dkim=fail", 20) + "\n",
			"mail.example.org", false, strings.TrimSpace(strings.Repeat("dkim=fail ", maxWhy)) + " ..."},
	}
	for _, tt := range tests {
		ok, why := Passed(fields(tt.header), tt.id)
		if ok != tt.ok || why != tt.why {
			t.Errorf("Passed(%s) = %v, %q, want %v, %q", tt.name, ok, why, tt.ok, tt.why)
		}
	}
}

// TestUnfold checks the folding forms a caller may hand over: CRLF, bare
// LF, and a fold inside a comment.
func TestUnfold(t *testing.T) {
	for _, v := range []string{
		"mail.example.org;\r\n\tdkim=pass (2048-bit key;\r\n unprotected) header.d=example.com",
		"mail.example.org;\n dkim=pass\n header.d=example.com",
		"mail.example.org;\r\n dkim=pass",
	} {
		h := []compose.Field{{Name: "Authentication-Results", Value: v}}
		if ok, why := Passed(h, "mail.example.org"); !ok || why != "dkim=pass" {
			t.Errorf("Passed(%q) = %v, %q, want true, %q", v, ok, why, "dkim=pass")
		}
	}
}

// FuzzPassed feeds arbitrary field values. Passed must not panic, must
// give a reason, must pass only with one of the three pass results, and a
// field below the trusted one must never change the answer.
func FuzzPassed(f *testing.F) {
	f.Add("mail.example.org", "mail.example.org; dkim=pass (2048-bit key; unprotected) header.d=example.com", "mail.example.org; dmarc=pass")
	f.Add("mx.google.com", gmailPass, gmailFail)
	f.Add("mx.example.org", "mx.example.org; spf=fail smtp.mailfrom=\"a;b\\\"(\"@x", "mx.example.org; spf=pass")
	f.Add("a", "a; dkim=pass\r\n (x", "a 1; none")
	f.Add("a", "(((a; \\", "a;;;;=;=;x=")
	f.Add("", "; dkim=pass", "spf=pass (sender IP is 1.2.3.4) smtp.mailfrom=x; dkim=pass")
	f.Fuzz(func(t *testing.T, id, v1, v2 string) {
		h := []compose.Field{{Name: "Authentication-Results", Value: v1}}
		ok, why := Passed(h, id)
		if why == "" {
			t.Fatalf("Passed(%q, %q) gave no reason", v1, id)
		}
		if ok && why != "dmarc=pass" && why != "dkim=pass" && why != "spf=pass" {
			t.Fatalf("Passed(%q, %q) = true, %q, want a pass result", v1, id, why)
		}
		if len(why) > 200+len(id) {
			t.Fatalf("Passed(%q, %q) reason is %d bytes long", v1, id, len(why))
		}
		if why == "no trusted Authentication-Results" || why == "no authserv-id configured" {
			return
		}
		below := append(h, compose.Field{Name: "Authentication-Results", Value: v2})
		if ok2, why2 := Passed(below, id); ok2 != ok || why2 != why {
			t.Fatalf("Passed(%q then %q, %q) = %v, %q; the first field alone gave %v, %q", v1, v2, id, ok2, why2, ok, why)
		}
	})
}

// TestAboveReceived: with one field per milter above our Received
// (Postfix with OpenDKIM, then OpenDMARC), any pass counts; a forged pass
// below our Received does not.
func TestAboveReceived(t *testing.T) {
	const id = "mx.example.com"
	received := compose.Field{Name: "Received", Value: "from mail.remote.example by mx.example.com (Postfix) with ESMTP id 4AbC; Mon, 23 Nov 2026 10:00:00 +0000"}
	dmarcNone := compose.Field{Name: "Authentication-Results", Value: id + "; dmarc=none (p=none dis=none) header.from=remote.example"}
	dkimPass := compose.Field{Name: "Authentication-Results", Value: id + "; dkim=pass (2048-bit key) header.d=remote.example"}
	dkimFail := compose.Field{Name: "Authentication-Results", Value: id + "; dkim=fail header.d=remote.example"}
	forged := compose.Field{Name: "Authentication-Results", Value: id + "; dkim=pass header.d=remote.example"}
	tests := []struct {
		name   string
		header []compose.Field
		want   bool
	}{
		{"dmarc none over dkim pass, both ours", []compose.Field{dmarcNone, dkimPass, received}, true},
		{"both ours fail", []compose.Field{dmarcNone, dkimFail, received}, false},
		{"forged pass below our Received", []compose.Field{dmarcNone, dkimFail, received, forged}, false},
		{"checks on an earlier host: topmost below our Received", []compose.Field{received, dkimPass, forged}, true},
		{"checks on an earlier host, its field failed, forged pass below", []compose.Field{received, dkimFail, forged}, false},
		{"ours garbled above Received", []compose.Field{{Name: "Authentication-Results", Value: id + "; dkim=pass (x"}, dkimPass, received}, false},
	}
	for _, tt := range tests {
		if got, why := Passed(tt.header, id); got != tt.want {
			t.Errorf("Passed(%s) = %v (%s), want %v", tt.name, got, why, tt.want)
		}
	}
}
