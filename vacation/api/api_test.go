package api_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/replygate/replygate/internal/siteca"
	"github.com/replygate/replygate/vacation/api"
	"github.com/replygate/replygate/vacation/store"
)

// lab is an API server over real TLS on loopback, with a site CA, its
// SQLite store, and the log lines it wrote.
type lab struct {
	t     *testing.T
	srv   *httptest.Server
	ca    *siteca.CA
	st    store.Store
	logs  *syncBuffer
	admin tls.Certificate
	// subjectAdmin is an admin by its subject, not its fingerprint.
	subjectAdmin tls.Certificate
	now          time.Time // the server's clock, frozen
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newLab(t *testing.T) *lab {
	t.Helper()
	ca, err := siteca.New(siteca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "replygate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	l := &lab{t: t, ca: ca, st: st, logs: &syncBuffer{}, now: time.Now()}
	l.admin = l.clientCert(ca, "ops@example.com", true, siteca.Options{})
	l.subjectAdmin = l.clientCert(ca, "root@example.com", true, siteca.Options{})
	reg := prometheus.NewRegistry()
	s := api.New(st, api.Config{
		ClientCAs: ca.Pool(),
		// One admin by fingerprint (upper case, as some tools print it),
		// one by subject.
		Admins:     []string{strings.ToUpper(siteca.Fingerprint(l.admin.Leaf)), l.subjectAdmin.Leaf.Subject.String()},
		LocalUIDs:  func(uint32) bool { return false },
		Registerer: reg, Gatherer: reg,
		Health: map[string]func(context.Context) error{"store": func(ctx context.Context) error { _, err := st.OutboxLen(ctx); return err }},
	}, slog.New(slog.NewJSONHandler(l.logs, nil)), func() time.Time { return l.now }) // frozen: back-offs do not run out mid-test
	l.srv = httptest.NewUnstartedServer(s.Handler())
	certPEM, keyPEM, err := ca.IssueServer([]string{"127.0.0.1"}, siteca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	l.srv.TLS = &tls.Config{Certificates: []tls.Certificate{sc}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	l.srv.StartTLS()
	t.Cleanup(l.srv.Close)
	return l
}

func (l *lab) clientCert(ca *siteca.CA, addr string, admin bool, opt siteca.Options) tls.Certificate {
	l.t.Helper()
	certPEM, keyPEM, err := ca.IssueClient(addr, admin, opt)
	if err != nil {
		l.t.Fatal(err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		l.t.Fatal(err)
	}
	return c
}

// client returns an HTTPS client that trusts the site CA and presents
// cert (none when cert is nil).
func (l *lab) client(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: l.ca.Pool(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		c := *cert
		// Present it whatever CAs the server names: the server decides.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
}

type answer struct {
	code int
	body string
	hdr  http.Header
}

func (l *lab) do(c *http.Client, method, path, token, body string) answer {
	l.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, l.srv.URL+path, rd)
	if err != nil {
		l.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		l.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b), resp.Header}
}

const away = `{"subject": "Out of office", "body": "Away until Monday.", "start": "2026-12-24", "end": "2030-12-26", "time_zone": "Europe/Berlin", "aliases": ["bob@example.com"]}`

func TestCertificates(t *testing.T) {
	l := newLab(t)
	alice := l.clientCert(l.ca, "alice@example.com", false, siteca.Options{})
	other, err := siteca.New(siteca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	forged := l.clientCert(other, "alice@example.com", false, siteca.Options{})
	expired := l.clientCert(l.ca, "alice@example.com", false, siteca.Options{Days: 1, Now: func() time.Time { return time.Now().AddDate(0, 0, -30) }})

	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"no certificate", l.client(nil)}, {"untrusted CA", l.client(&forged)}, {"expired", l.client(&expired)}} {
		a := l.do(c.client, "PUT", "/v1/vacations/alice@example.com", "", strings.Replace(away, `"bob@example.com"`, `"alice2@example.com"`, 1))
		if a.code != http.StatusUnauthorized || !strings.Contains(a.body, `"error"`) {
			t.Errorf("%s: PUT = %d %s, want 401 with an error", c.name, a.code, a.body)
		}
	}
	if vs, _ := l.st.ListVacations(context.Background()); len(vs) != 0 {
		t.Errorf("refused requests stored %d vacations", len(vs))
	}
	for _, reason := range []string{"no credentials", "unknown authority", "expired"} {
		if !strings.Contains(l.logs.String(), reason) {
			t.Errorf("log has no auth failure naming %q:\n%s", reason, l.logs)
		}
	}

	ac := l.client(&alice)
	// alice may not claim bob's address as her alias, nor touch bob's vacation.
	if a := l.do(ac, "PUT", "/v1/vacations/alice@example.com", "", away); a.code != 400 || !strings.Contains(a.body, "aliases") {
		t.Errorf("PUT with another user's address as alias = %d %s, want 400 naming aliases", a.code, a.body)
	}
	own := strings.Replace(away, `, "aliases": ["bob@example.com"]`, "", 1)
	if a := l.do(ac, "PUT", "/v1/vacations/alice@example.com", "", own); a.code != 200 {
		t.Fatalf("PUT own = %d %s", a.code, a.body)
	}
	a := l.do(ac, "GET", "/v1/vacations/alice@example.com", "", "")
	var v api.Vacation
	if a.code != 200 || json.Unmarshal([]byte(a.body), &v) != nil || v.Subject != "Out of office" || v.Start == nil || *v.Start != "2026-12-24T00:00:00+01:00" {
		t.Errorf("GET own = %d %s", a.code, a.body)
	}
	// The same address in other spellings is still hers; another
	// address, however it is escaped, is not.
	if a := l.do(ac, "GET", "/v1/vacations/ALICE@Example.COM", "", ""); a.code != 200 {
		t.Errorf("GET own in upper case = %d %s", a.code, a.body)
	}
	if a := l.do(ac, "GET", "/v1/vacations/alice%40example.com", "", ""); a.code != 200 {
		t.Errorf("GET own with %%40 = %d %s", a.code, a.body)
	}
	for _, p := range []string{"/v1/vacations/bob%40example.com", "/v1/vacations/alice@example.com%2F..%2Fbob@example.com", "/v1/vacations/bob@example.com%00alice@example.com"} {
		if a := l.do(ac, "GET", p, "", ""); a.code != 403 && a.code != 400 && a.code != 404 {
			t.Errorf("GET %s = %d %s, want 400, 403 or 404", p, a.code, a.body)
		} else if a.code == 200 || strings.Contains(a.body, "Out of office") {
			t.Errorf("GET %s leaked a vacation: %s", p, a.body)
		}
	}
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/v1/vacations/bob@example.com", ""},
		{"PUT", "/v1/vacations/bob@example.com", own},
		{"DELETE", "/v1/vacations/bob@example.com", ""},
		{"GET", "/v1/stamping/bob@example.com", ""},
		{"PUT", "/v1/stamping/bob@example.com", `{"always": true}`},
		{"GET", "/v1/tokens", ""},
		{"POST", "/v1/tokens", `{"name": "x", "admin": true}`},
	} {
		if a := l.do(ac, r.method, r.path, "", r.body); a.code != http.StatusForbidden {
			t.Errorf("alice %s %s = %d %s, want 403", r.method, r.path, a.code, a.body)
		}
	}
	// The admin sees and changes everyone's.
	adm := l.client(&l.admin)
	if a := l.do(adm, "PUT", "/v1/vacations/bob@example.com", "", own); a.code != 200 {
		t.Errorf("admin PUT bob = %d %s", a.code, a.body)
	}
	var list []api.Vacation
	if a := l.do(adm, "GET", "/v1/vacations", "", ""); a.code != 200 || json.Unmarshal([]byte(a.body), &list) != nil || len(list) != 2 {
		t.Errorf("admin list = %d %s, want both vacations", a.code, a.body)
	}
	if a := l.do(l.client(&l.subjectAdmin), "GET", "/v1/vacations/bob@example.com", "", ""); a.code != 200 {
		t.Errorf("admin by subject GET bob = %d %s", a.code, a.body)
	}
	if a := l.do(ac, "GET", "/v1/vacations", "", ""); a.code != 200 || json.Unmarshal([]byte(a.body), &list) != nil || len(list) != 1 || list[0].Address != "alice@example.com" {
		t.Errorf("alice list = %d %s, want only her own", a.code, a.body)
	}
	if a := l.do(ac, "PUT", "/v1/stamping/alice@example.com", "", `{"always": true}`); a.code != 200 {
		t.Errorf("alice stamping = %d %s", a.code, a.body)
	}
	if on, err := l.st.StampAll(context.Background(), "alice@example.com"); err != nil || !on {
		t.Errorf("stamping not stored: %v %v", on, err)
	}
	if a := l.do(ac, "DELETE", "/v1/vacations/alice@example.com", "", ""); a.code != http.StatusNoContent {
		t.Errorf("alice DELETE own = %d %s", a.code, a.body)
	}
	if a := l.do(ac, "GET", "/v1/vacations/alice@example.com", "", ""); a.code != 404 {
		t.Errorf("GET after DELETE = %d %s, want 404", a.code, a.body)
	}
	// Every change left one audit line naming who and what.
	for _, want := range []string{`"action":"vacation.set","target":"alice@example.com"`, `"action":"vacation.set","target":"bob@example.com"`,
		`"action":"vacation.clear","target":"alice@example.com"`, `"action":"stamping.set:true"`} {
		if !strings.Contains(l.logs.String(), want) {
			t.Errorf("no audit line with %s", want)
		}
	}
	if strings.Count(l.logs.String(), `"msg":"audit"`) != 4 {
		t.Errorf("want 4 audit lines, log:\n%s", l.logs)
	}
}

func TestTokens(t *testing.T) {
	l := newLab(t)
	adm := l.client(&l.admin)
	plain := l.client(nil)
	a := l.do(adm, "POST", "/v1/tokens", "", `{"name": "bugtracker", "addresses": ["carol@example.com"]}`)
	var carol api.NewToken
	if a.code != 201 || json.Unmarshal([]byte(a.body), &carol) != nil || !strings.HasPrefix(carol.Token, "rgt_") {
		t.Fatalf("create token = %d %s", a.code, a.body)
	}
	a = l.do(adm, "POST", "/v1/tokens", "", `{"name": "ops", "admin": true}`)
	var root api.NewToken
	if a.code != 201 || json.Unmarshal([]byte(a.body), &root) != nil {
		t.Fatalf("create admin token = %d %s", a.code, a.body)
	}
	own := `{"body": "Away."}`
	if a := l.do(plain, "PUT", "/v1/vacations/carol@example.com", carol.Token, own); a.code != 200 {
		t.Errorf("token PUT own = %d %s", a.code, a.body)
	}
	req, _ := http.NewRequest("GET", l.srv.URL+"/v1/vacations/carol@example.com", nil)
	req.Header.Set("Authorization", "bearer "+carol.Token) // the scheme is case-insensitive
	if resp, err := plain.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("lower-case bearer scheme = %v %v, want 200", resp, err)
	}
	if a := l.do(plain, "PUT", "/v1/vacations/dave@example.com", carol.Token, own); a.code != 403 {
		t.Errorf("token PUT other = %d %s, want 403", a.code, a.body)
	}
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/v1/tokens", ""},
		{"POST", "/v1/tokens", `{"name": "mine", "admin": true}`},
		{"DELETE", "/v1/tokens/" + root.ID, ""},
		{"GET", "/v1/stamping/dave@example.com", ""},
	} {
		if a := l.do(plain, r.method, r.path, carol.Token, r.body); a.code != 403 {
			t.Errorf("user token %s %s = %d %s, want 403", r.method, r.path, a.code, a.body)
		}
	}
	if a := l.do(plain, "PUT", "/v1/vacations/carol@example.com", carol.Token, `{"body": "x", "aliases": ["dave@example.com"]}`); a.code != 400 || !strings.Contains(a.body, "aliases") {
		t.Errorf("user token claiming another's address as alias = %d %s, want 400", a.code, a.body)
	}
	if a := l.do(plain, "PUT", "/v1/stamping/carol@example.com", carol.Token, `{"always": true}`); a.code != 200 {
		t.Errorf("user token stamping own = %d %s", a.code, a.body)
	}
	var list []api.Vacation
	if a := l.do(plain, "GET", "/v1/vacations", carol.Token, ""); a.code != 200 || json.Unmarshal([]byte(a.body), &list) != nil || len(list) != 1 || list[0].Address != "carol@example.com" {
		t.Errorf("user token list = %d %s, want only carol's", a.code, a.body)
	}
	if a := l.do(plain, "PUT", "/v1/vacations/dave@example.com", root.Token, own); a.code != 200 {
		t.Errorf("admin token PUT = %d %s", a.code, a.body)
	}
	a = l.do(plain, "GET", "/v1/tokens", root.Token, "")
	if a.code != 200 || strings.Contains(a.body, carol.Token[len(carol.Token)-20:]) || strings.Contains(a.body, `"token"`) {
		t.Errorf("token list = %d %s; must not show secrets", a.code, a.body)
	}
	if strings.Contains(l.logs.String(), carol.Token) {
		t.Errorf("a token's secret reached the log")
	}
	// A wrong secret for a real id, a made-up token, and a revoked one.
	wrong := carol.Token[:len(carol.Token)-4] + "AAAA"
	if wrong == carol.Token {
		wrong = carol.Token[:len(carol.Token)-4] + "BBBB"
	}
	for _, tok := range []string{wrong, "rgt_000000000000_" + strings.Repeat("A", 43), "hunter2"} {
		if a := l.do(plain, "GET", "/v1/vacations/carol@example.com", tok, ""); a.code != 401 {
			t.Errorf("GET with token %q = %d, want 401", tok, a.code)
		}
	}
	if a := l.do(plain, "DELETE", "/v1/tokens/"+carol.ID, root.Token, ""); a.code != 204 {
		t.Errorf("revoke = %d %s", a.code, a.body)
	}
	if a := l.do(plain, "GET", "/v1/vacations/carol@example.com", carol.Token, ""); a.code != 401 {
		t.Errorf("revoked token = %d, want 401", a.code)
	}
}

func TestBruteForceThrottled(t *testing.T) {
	l := newLab(t)
	plain := l.client(nil)
	codes := map[int]int{}
	for i := 0; i < 30; i++ {
		tok := "rgt_" + strings.Repeat("0", 12) + "_" + strings.Repeat("x", 42) + string(rune('A'+i%26))
		a := l.do(plain, "GET", "/v1/vacations/alice@example.com", tok, "")
		codes[a.code]++
		if a.code == 429 && a.hdr.Get("Retry-After") == "" {
			t.Errorf("429 without Retry-After")
		}
	}
	// Five free failures, then one attempt per back-off: the rest of a
	// fast run is refused unexamined.
	if codes[401] != 5 || codes[429] != 25 {
		t.Errorf("30 fast bad tokens got %v, want 5×401 and 25×429", codes)
	}
	// Another credential from the same address is not held back: a
	// client failing on purpose cannot lock others out.
	if a := l.do(l.client(&l.admin), "GET", "/v1/vacations", "", ""); a.code != 200 {
		t.Errorf("admin from an address where a token is throttled = %d, want 200", a.code)
	}
	if !strings.Contains(l.logs.String(), `"failures":5`) {
		t.Errorf("failures not logged with their count")
	}
}

func TestBadRequests(t *testing.T) {
	l := newLab(t)
	adm := l.client(&l.admin)
	long := strings.Repeat("x", api.MaxBody+10)
	cases := []struct {
		name, path, body string
		code             int
		want             string
	}{
		{"malformed JSON", "/v1/vacations/alice@example.com", `{"body": "x"`, 400, "request: truncated JSON"},
		{"not an object", "/v1/vacations/alice@example.com", `[1,2]`, 400, "request: json: cannot unmarshal array"},
		{"trailing data", "/v1/vacations/alice@example.com", `{"body": "x"} {"body": "y"}`, 400, "request: trailing data"},
		{"unknown field", "/v1/vacations/alice@example.com", `{"body": "x", "bcc": "a@b"}`, 400, "bcc: unknown field"},
		{"wrong type", "/v1/vacations/alice@example.com", `{"body": 5}`, 400, "body: want a JSON string"},
		{"oversized", "/v1/vacations/alice@example.com", `{"body": "` + long + `"}`, 413, "request: larger than"},
		{"empty body", "/v1/vacations/alice@example.com", `{"subject": "x"}`, 400, "body: must not be empty"},
		{"CRLF subject", "/v1/vacations/alice@example.com", `{"body": "x", "subject": "hi\r\nBcc: victim@example.org"}`, 400, "subject:"},
		{"LF from_name", "/v1/vacations/alice@example.com", `{"body": "x", "from_name": "Alice\nX-Evil: 1"}`, 400, "from_name:"},
		{"CR alias", "/v1/vacations/alice@example.com", `{"body": "x", "aliases": ["a@example.com\rBcc: v@example.org"]}`, 400, "aliases:"},
		{"display-name alias", "/v1/vacations/alice@example.com", `{"body": "x", "aliases": ["Eve <eve@example.org>"]}`, 400, "aliases:"},
		{"CRLF time zone", "/v1/vacations/alice@example.com", `{"body": "x", "time_zone": "UTC\r\nX: y"}`, 400, "time_zone:"},
		{"path time zone", "/v1/vacations/alice@example.com", `{"body": "x", "time_zone": "../../../etc/passwd"}`, 400, "time_zone:"},
		{"NUL body", "/v1/vacations/alice@example.com", `{"body": "x\u0000y"}`, 400, "body: must not contain control characters"},
		{"bad UTF-8", "/v1/vacations/alice@example.com", "{\"body\": \"x\", \"subject\": \"\xff\xfe\"}", 400, "request: must be UTF-8"},
		{"end before start", "/v1/vacations/alice@example.com", `{"body": "x", "start": "2030-12-26", "end": "2030-12-24"}`, 400, "end: must be after start"},
		{"end in the past", "/v1/vacations/alice@example.com", `{"body": "x", "end": "2001-01-01"}`, 400, "end: is in the past"},
		{"start far ahead", "/v1/vacations/alice@example.com", `{"body": "x", "start": "9999-01-01"}`, 400, "start:"},
		{"bad date", "/v1/vacations/alice@example.com", `{"body": "x", "end": "next week"}`, 400, "end:"},
		{"interval 0 is default; negative", "/v1/vacations/alice@example.com", `{"body": "x", "interval_days": -1}`, 400, "interval_days:"},
		{"interval huge", "/v1/vacations/alice@example.com", `{"body": "x", "interval_days": 100000}`, 400, "interval_days:"},
		{"too many aliases", "/v1/vacations/alice@example.com", `{"body": "x", "aliases": [` + strings.Repeat(`"a@example.com",`, 60) + `"b@example.com"]}`, 400, "aliases:"},
		{"CRLF in path address", "/v1/vacations/alice@example.com%0D%0ABcc:%20v@example.org", `{"body": "x"}`, 400, "address:"},
		{"display name in path", "/v1/vacations/Alice%20%3Calice@example.com%3E", `{"body": "x"}`, 400, "address:"},
		{"stamping without always", "/v1/stamping/alice@example.com", `{}`, 400, "always:"},
		{"stamping string", "/v1/stamping/alice@example.com", `{"always": "yes"}`, 400, "always:"},
		{"stamping false, then junk", "/v1/stamping/alice@example.com", `{"always": false} x`, 400, "request: trailing"},
		{"non-ASCII address", "/v1/vacations/%E2%84%AAate@example.com", `{"body": "x"}`, 400, "address:"},
		{"long from_name", "/v1/vacations/alice@example.com", `{"body": "x", "from_name": "` + strings.Repeat("n", 101) + `"}`, 400, "from_name: longer than 100"},
	}
	for _, c := range cases {
		a := l.do(adm, "PUT", c.path, "", c.body)
		if a.code != c.code || !strings.Contains(a.body, c.want) {
			t.Errorf("%s: PUT = %d %s, want %d naming %q", c.name, a.code, a.body, c.code, c.want)
		}
	}
	if vs, err := l.st.ListVacations(context.Background()); err != nil || len(vs) != 0 {
		t.Errorf("bad requests stored %d vacations (%v)", len(vs), err)
	}
	if s, err := l.st.StampAllSenders(context.Background()); err != nil || len(s) != 0 {
		t.Errorf("bad requests stored stamping %v (%v)", s, err)
	}
	if a := l.do(adm, "GET", "/v1/stamping/alice@example.com", "", ""); a.code != 200 || !strings.Contains(a.body, `"always": false`) {
		t.Errorf("stamping after bad requests = %d %s, want never set", a.code, a.body)
	}
	// Wrong content type, wrong method, unknown path.
	req, _ := http.NewRequest("PUT", l.srv.URL+"/v1/vacations/alice@example.com", strings.NewReader("body=x"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, err := adm.Do(req); err != nil || resp.StatusCode != 415 {
		t.Errorf("form post = %v %v, want 415", resp, err)
	}
	// No Content-Type at all is what a browser's cross-site request may
	// send without asking first.
	req, _ = http.NewRequest("POST", l.srv.URL+"/v1/tokens", strings.NewReader(`{"name": "x", "admin": true}`))
	if resp, err := adm.Do(req); err != nil || resp.StatusCode != 415 {
		t.Errorf("POST without Content-Type = %v %v, want 415", resp, err)
	}
	if a := l.do(adm, "POST", "/v1/vacations/alice@example.com", "", `{"body":"x"}`); a.code != 405 || a.hdr.Get("Allow") == "" || !strings.Contains(a.body, `"error"`) {
		t.Errorf("POST vacation = %d %s, want 405 JSON with Allow", a.code, a.body)
	}
	if a := l.do(adm, "GET", "/v2/nothing", "", ""); a.code != 404 || !strings.Contains(a.body, `"error"`) {
		t.Errorf("unknown path = %d %s, want 404 JSON", a.code, a.body)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	l := newLab(t)
	plain := l.client(nil)
	if a := l.do(plain, "GET", "/healthz", "", ""); a.code != 200 || !strings.Contains(a.body, `"store": "up"`) {
		t.Errorf("healthz = %d %s", a.code, a.body)
	}
	l.do(plain, "GET", "/v1/vacations", "", "") // one auth failure
	a := l.do(plain, "GET", "/metrics", "", "")
	for _, want := range []string{"replygate_api_auth_failures_total 1", `replygate_api_requests_total{code="401",route="GET /v1/vacations"} 1`} {
		if !strings.Contains(a.body, want) {
			t.Errorf("metrics lack %q:\n%s", want, a.body)
		}
	}
}

func TestLocalSocket(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("peer credentials (SO_PEERCRED) are read on Linux only")
	}
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "replygate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, allowed := range []bool{true, false} {
		var logs syncBuffer
		uid := uint32(os.Getuid())
		s := api.New(st, api.Config{LocalUIDs: func(u uint32) bool { return allowed && u == uid }}, slog.New(slog.NewJSONHandler(&logs, nil)), time.Now)
		sock := filepath.Join(t.TempDir(), "api.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: s.Handler(), ConnContext: api.LocalConnContext}
		go srv.Serve(ln)
		c := api.NewLocal(sock)
		_, err = c.PutVacation(context.Background(), "erin@example.com", api.VacationRequest{Body: "Away."})
		var ae *api.Error
		switch {
		case allowed && err != nil:
			t.Errorf("local PUT as uid %d = %v", uid, err)
		case !allowed && (err == nil || !errors.As(err, &ae) || ae.Status != 401):
			t.Errorf("local PUT as an unlisted uid = %v, want 401", err)
		case !allowed && !strings.Contains(logs.String(), fmt.Sprintf("local uid %d may not use the socket", uid)):
			t.Errorf("refusal does not name the peer's uid (SO_PEERCRED unread?):\n%s", logs.String())
		}
		srv.Close()
	}
}

// TestStoreDown: with PostgreSQL unreachable the API answers 503 and
// says nothing was changed; it is no authentication failure.
func TestStoreDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens here now
	st, err := store.NewPostgres("postgres://replygate@" + dead + "/test?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var logs syncBuffer
	s := api.New(st, api.Config{LocalUIDs: func(uint32) bool { return true }}, slog.New(slog.NewJSONHandler(&logs, nil)), time.Now)
	sock := filepath.Join(t.TempDir(), "api.sock")
	uln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s.Handler(), ConnContext: api.LocalConnContext}
	go srv.Serve(uln)
	defer srv.Close()
	_, err = api.NewLocal(sock).PutVacation(context.Background(), "erin@example.com", api.VacationRequest{Body: "Away."})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || !strings.Contains(ae.Message, "nothing was changed") {
		t.Errorf("PUT with the store down = %v, want 503 saying nothing was changed", err)
	}
}

// TestRemoteClear: the CLI never sends a token or a vacation text in
// clear text beyond loopback.
func TestRemoteClear(t *testing.T) {
	for base, ok := range map[string]bool{
		"https://mail.example.com:8895": true,
		"http://127.0.0.1:8895":         true,
		"http://localhost:8895":         true,
		"http://[::1]:8895":             true,
		"http://mail.example.com:8895":  false,
		"http://192.0.2.1:8895":         false,
		"ftp://mail.example.com":        false,
		"mail.example.com:8895":         false,
	} {
		_, err := api.NewRemote(base, nil, "rgt_x")
		if (err == nil) != ok {
			t.Errorf("NewRemote(%q) = %v, want ok=%v", base, err, ok)
		}
	}
}
