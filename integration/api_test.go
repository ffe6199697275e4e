package integration

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/replygate/replygate/internal/mtalab"
)

// TestAPIEndToEnd is the API as an admin sets it up and a user uses it:
// a site CA and certificates from `replygate ca`, the daemon on HTTPS
// with client certificates, curl setting a vacation, the remote CLI, a
// token, and a real message through Postfix answered with the text set
// over the API.
func TestAPIEndToEnd(t *testing.T) {
	t.Parallel()
	mtalab.NeedRoot(t)
	mtalab.Need(t, "postfix", "saslpasswd2", "curl")
	pki := t.TempDir()
	rgcmd := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(replygateBin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("replygate %q: %v\n%s", args, err, out)
		}
		return string(out)
	}
	caDir, certs := filepath.Join(pki, "ca"), filepath.Join(pki, "certs")
	rgcmd("ca", "init", "--dir", caDir)
	rgcmd("ca", "issue", "alice@example.com", "--dir", caDir, "--out", certs)
	out := rgcmd("ca", "issue", "ops@example.com", "--admin", "--dir", caDir, "--out", certs)
	fp := regexp.MustCompile(`sha256:[0-9a-f]{64}`).FindString(out)
	if fp == "" {
		t.Fatalf("ca issue --admin printed no fingerprint:\n%s", out)
	}
	rgcmd("ca", "serve-cert", "127.0.0.1", "--dir", caDir, "--out", certs)
	cacert := filepath.Join(caDir, "ca.crt")

	sink := mtalab.NewSink(t)
	rg := startReplygate(t, fmt.Sprintf(vacationConfig, sink.Addr())+fmt.Sprintf(`
[api]
tls_cert = %q
tls_key = %q
client_ca = %q
admins = [%q]
`, filepath.Join(certs, "server.crt"), filepath.Join(certs, "server.key"), cacert, fp))
	base := "https://" + rg.API

	curl := func(args ...string) (int, string) {
		t.Helper()
		args = append([]string{"-sS", "--cacert", cacert, "-o", "-", "-w", "\n%{http_code}"}, args...)
		out, err := exec.Command("curl", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %q: %v\n%s", args, err, out)
		}
		s := strings.TrimSpace(string(out))
		i := strings.LastIndexByte(s, '\n')
		var code int
		fmt.Sscan(s[i+1:], &code)
		return code, s[:max(i, 0)]
	}
	alice := []string{"--cert", filepath.Join(certs, "alice@example.com.crt"), "--key", filepath.Join(certs, "alice@example.com.key")}
	body := `{"subject": "Out of office", "body": "Alice is away; set over the API.\n", "end": "2030-01-31", "time_zone": "Europe/Berlin"}`
	put := []string{"-X", "PUT", "-H", "Content-Type: application/json", "--data-binary", body}

	if code, out := curl(append(put, base+"/v1/vacations/alice@example.com")...); code != 401 {
		t.Errorf("curl without a certificate = %d %s, want 401", code, out)
	}
	if code, out := curl(append(append(put, alice...), base+"/v1/vacations/bob@example.com")...); code != 403 {
		t.Errorf("alice's certificate on bob's address = %d %s, want 403", code, out)
	}
	if code, out := curl(append(append(put, alice...), base+"/v1/vacations/alice@example.com")...); code != 200 || !strings.Contains(out, `"end": "2030-02-01T00:00:00+01:00"`) {
		t.Fatalf("alice sets her vacation = %d %s", code, out)
	}

	// The remote CLI: alice reads hers; the admin lists everyone's and
	// makes a token for a bug tracker's address.
	remote := []string{"--server", base, "--ca", cacert}
	if out := rgcmd(append([]string{"vacation", "get", "alice@example.com", "--cert", alice[1], "--key", alice[3]}, remote...)...); !strings.Contains(out, "set over the API") {
		t.Errorf("remote vacation get = %q", out)
	}
	adminCert := []string{"--cert", filepath.Join(certs, "ops@example.com.crt"), "--key", filepath.Join(certs, "ops@example.com.key")}
	if out := rgcmd(append(append([]string{"vacation", "list"}, adminCert...), remote...)...); !strings.HasPrefix(out, "alice@example.com\t") {
		t.Errorf("admin vacation list = %q", out)
	}
	out = rgcmd(append(append([]string{"token", "create", "tracker", "--address", "tracker@example.com"}, adminCert...), remote...)...)
	token := strings.Fields(out)[0]
	if code, out := curl("-X", "PUT", "-H", "Authorization: Bearer "+token, "-H", "Content-Type: application/json", "--data-binary", `{"always": true}`, base+"/v1/stamping/tracker@example.com"); code != 200 {
		t.Errorf("token on its own address = %d %s", code, out)
	}
	if code, out := curl("-H", "Authorization: Bearer "+token, base+"/v1/vacations/alice@example.com"); code != 403 {
		t.Errorf("token on another address = %d %s, want 403", code, out)
	}

	// A real message to alice is answered with the text set over the API.
	pf := mtalab.StartPostfix(t, contribPostfix(t, rg.Milter, sink.Addr()))
	mtalab.SendMail(t, pf.Addr(mtalab.SMTPService), "", "", "carol@remote.example", []string{"alice@example.com"},
		pfMessage("api-1", "carol@remote.example", "alice@example.com"))
	got := sink.WaitFor(t, 20*time.Second, "the reply to carol", func(m []mtalab.Message) bool {
		return len(repliesTo(m, "carol@remote.example")) > 0
	})
	if r := repliesTo(got, "carol@remote.example")[0]; !bytes.Contains(r.Data, []byte("set over the API")) || !bytes.Contains(r.Data, []byte("Subject: Out of office")) {
		t.Errorf("reply does not carry the API's text:\n%s", r.Data)
	}

	// Health and metrics, as a monitoring system scrapes them.
	if code, out := curl(base + "/healthz"); code != 200 || !strings.Contains(out, `"store": "up"`) || !strings.Contains(out, `"milter": "up"`) {
		t.Errorf("healthz = %d %s", code, out)
	}
	rg.WaitLines(t, 10*time.Second, "reply sent", func(l []map[string]any) bool { return len(filter(l, "reply sent")) > 0 })
	_, metrics := curl(base + "/metrics")
	for _, want := range []string{"replygate_replies_sent_total 1", "replygate_api_auth_failures_total 1",
		`replygate_api_requests_total{code="403",route="PUT /v1/vacations/{address}"} 1`, "replygate_messages_allowed_total 1", `replygate_verdicts_total{reason="list-header"} 0`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	var audits int
	for _, l := range rg.records() {
		if l["msg"] == "audit" {
			audits++
		}
	}
	if audits != 3 { // alice's vacation, the token, the token's stamping
		t.Errorf("%d audit lines, want 3:\n%s", audits, rg.Log())
	}
}
