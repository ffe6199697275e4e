package milter

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"

	gomilter "github.com/emersion/go-milter"

	"github.com/replygate/replygate/internal/corpus"
	"github.com/replygate/replygate/policy"
)

// TestCorpusThroughMilter sends every corpus message through a real milter
// session, the envelope as an MTA sends it (macros, connect data), and
// compares the logged verdict with the golden file that `check --json`
// prints: the milter and `check` judge alike.
func TestCorpusThroughMilter(t *testing.T) {
	ts := startServer(t, "unix", policy.DefaultConfig(), Config{}, nil)
	msgs, err := corpus.Load("../testdata/messages")
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) < 80 {
		t.Fatalf("%d corpus messages, want at least 80", len(msgs))
	}
	sent := 0
	var want []map[string]any
	for _, cm := range msgs {
		e := cm.Case.Envelope
		if len(e.Aliases) > 0 || e.Outbound {
			continue // aliases come from the store, forced direction only from `check`
		}
		var golden map[string]any
		readJSON(t, cm.Golden, &golden)
		f, err := os.Open(cm.EML)
		if err != nil {
			t.Fatal(err)
		}
		h, err := policy.ReadHeader(f, policy.Limits{})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}

		s := ts.session(t)
		var conn []string
		if e.Daemon != "" {
			conn = append(conn, "{daemon_name}", e.Daemon)
		}
		if len(conn) > 0 {
			if err := s.Macros(gomilter.CodeConn, conn...); err != nil {
				t.Fatal(err)
			}
		}
		switch {
		case e.Local:
			_, err = s.Conn("localhost", gomilter.FamilyInet, 0, "127.0.0.1")
		case e.ClientIP != "":
			_, err = s.Conn("client.example", gomilter.FamilyInet, 40000, e.ClientIP)
		}
		if err != nil {
			t.Fatal(err)
		}
		var macros []string
		if e.Auth != "" {
			macros = append(macros, "{auth_authen}", e.Auth)
		}
		var fields [][2]string
		for _, fl := range h.Fields {
			fields = append(fields, [2]string{fl.Name, fl.Value})
		}
		rcpts := make([]string, len(e.Rcpt))
		for i, r := range e.Rcpt {
			rcpts[i] = "<" + r + ">"
		}
		send(t, s, message{macros: macros, from: "<" + e.MailFrom + ">", rcpts: rcpts, header: fields})
		s.Close()
		sent++
		golden["file"] = cm.Name
		want = append(want, golden)
	}
	got := ts.logs.records(t, "verdict")
	if len(got) != sent || sent < 80 {
		t.Fatalf("%d verdict lines for %d messages (want at least 80)", len(got), sent)
	}
	for i, g := range got {
		w := want[i]
		for _, k := range []string{"auto_reply", "reasons", "stamp", "stamp_reasons"} {
			gv, wv := g[k], w[k]
			if k == "reasons" || k == "stamp_reasons" {
				gv, wv = fmtList(gv), fmtList(wv)
			}
			if !reflect.DeepEqual(gv, wv) {
				t.Errorf("%s through the milter: %s = %v, check --json says %v", w["file"], k, gv, wv)
			}
		}
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
