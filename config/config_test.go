package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// TestExampleIsDefault keeps contrib/replygate.toml and Default equal: the
// example lists every key at its default.
func TestExampleIsDefault(t *testing.T) {
	got, err := Load("../contrib/replygate.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	// An empty TOML array decodes to an empty slice, the default is nil.
	if len(got.Policy.InternalNetworks)+len(got.Policy.MachineNetworks)+len(got.Policy.MachineSenders)+
		len(got.Policy.MachineLogins)+len(got.Policy.OptInSenders)+len(got.API.Admins) != 0 {
		t.Fatalf("example sets lists that the default leaves empty: %+v", got.Policy)
	}
	got.Policy.InternalNetworks, got.Policy.MachineNetworks = nil, nil
	got.Policy.MachineSenders, got.Policy.MachineLogins, got.Policy.OptInSenders = nil, nil, nil
	got.API.Admins = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("contrib/replygate.toml decodes to\n%+v\nwant Default()\n%+v", got, want)
	}
	// Every key of the struct appears in the example, in its table.
	var c Config
	md, err := toml.DecodeFile("../contrib/replygate.toml", &c)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, k := range md.Keys() {
		listed[k.String()] = true
	}
	for _, key := range tomlKeys("", reflect.TypeOf(want)) {
		if !listed[key] {
			t.Errorf("contrib/replygate.toml does not list %s", key)
		}
	}
}

// tomlKeys returns the dotted key of every field, "milter.listen".
func tomlKeys(prefix string, t reflect.Type) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key := prefix + f.Tag.Get("toml")
		if f.Type.Kind() == reflect.Struct {
			out = append(out, tomlKeys(key+".", f.Type)...)
			continue
		}
		out = append(out, key)
	}
	return out
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name, file string
		want       []string
	}{
		{"unknown key", "[milter]\nlisten = \"inet:127.0.0.1:9\"\nlistne = \"x\"\n", []string{"unknown key milter.listne"}},
		{"unknown table", "[miltr]\nlisten = \"x\"\n", []string{"unknown key miltr"}},
		{"bad values reported together", "[milter]\nlisten = \"inet:localhost\"\nfail_action = \"reject\"\nidle_timeout = \"0s\"\n[api]\nlisten = \"8895\"\n",
			[]string{`milter.listen: "inet:localhost": no port`, "milter.fail_action", "milter.idle_timeout", "api.listen"}},
		{"bad duration", "shutdown_timeout = \"soon\"\n", []string{"shutdown_timeout", "not a duration"}},
		{"bad network", "[policy]\ninternal_networks = [\"10.0.0.0/33\"]\n", []string{"internal_networks"}},
		{"bad spam flag", "[policy]\nspam_flags = [\"X-Spam\"]\n", []string{"policy.spam_flags"}},
		{"bad socket mode", "[milter]\nsocket_mode = \"rw\"\n", []string{"milter.socket_mode"}},
		{"short outbox lease", "[vacation]\noutbox_lease = \"1s\"\n", []string{"vacation.outbox_lease: 1s must be at least 2s"}},
		{"not toml", "this is not toml", []string{"config"}},
		{"api beyond loopback without TLS", "[api]\nlisten = \"0.0.0.0:8895\"\n", []string{"api.listen", "beyond loopback", "tls_cert"}},
		{"api half TLS", "[api]\ntls_cert = \"/x.crt\"\nclient_ca = \"/ca.crt\"\n", []string{"api.tls_cert and api.tls_key: set both"}},
		{"client CA without TLS", "[api]\nclient_ca = \"/ca.crt\"\n", []string{"api.client_ca: client certificates need TLS"}},
		{"bad admin", "[api]\nadmins = [\"alice\"]\n", []string{"api.admins"}},
		{"relative socket", "[api]\nsocket = \"api.sock\"\n", []string{"api.socket"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.toml")
			os.WriteFile(path, []byte(tt.file), 0o600)
			_, err := Load(path)
			if err == nil {
				t.Fatalf("Load(%s) = nil error", tt.name)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load(%s) = %q, want it to contain %q", tt.name, err, w)
				}
			}
		})
	}
}
