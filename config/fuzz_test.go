package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary files to Load: it never panics, a file it
// accepts passes Validate, and every error says where the problem is: it
// names a key of the file's schema, or a line (TOML syntax), or the
// unknown key.
func FuzzLoad(f *testing.F) {
	example, err := os.ReadFile("../contrib/replygate.toml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	for _, s := range []string{
		"",
		"[milter]\nlisten = \"inet:127.0.0.1:9\"\nlistne = \"x\"\n",
		"[milter]\nlisten = \"inet:localhost\"\nfail_action = \"reject\"\nidle_timeout = \"0s\"\n[api]\nlisten = \"8895\"\n",
		"shutdown_timeout = \"soon\"\n",
		"shutdown_timeout = 30\n",
		"[policy]\ninternal_networks = [\"10.0.0.0/33\"]\nspam_flags = [\"X-Spam\"]\n",
		"[milter]\nmax_sessions = -1\nmax_header_fields = 99999999999999999999\n",
		"[milter]\nsocket_mode = \"rw\"\n[milter]\n",
		"relay = \"\x00\"\nstate_dir = \"relative\"\nstore = \"mysql://x\"\n",
		"[vacation]\ndkim_key = \"/k.pem\"\nuser_credit = 0\n",
		"milter = 1\n",
		"[[milter]]\n",
		"a.b.c = 1\n",
		"this is not toml",
	} {
		f.Add([]byte(s))
	}
	keys := tomlKeys("", reflect.TypeOf(Config{}))
	line := regexp.MustCompile(`line \d+`)
	path := filepath.Join(f.TempDir(), "replygate.toml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path)
		if err == nil {
			if err := c.Validate(); err != nil {
				t.Fatalf("Load accepted %q, but Validate says %v", data, err)
			}
			return
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "config "+path+": ") {
			t.Fatalf("Load(%q) = %q, want it to name the file", data, msg)
		}
		if line.MatchString(msg) || strings.Contains(msg, "unknown key") {
			return
		}
		for _, k := range keys {
			if strings.Contains(msg, k) {
				return
			}
		}
		t.Fatalf("Load(%q) = %q: names no key and no line", data, msg)
	})
}
