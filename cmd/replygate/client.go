package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/replygate/replygate/vacation/api"
)

// clientFlags are how a CLI command reaches the API: the local daemon's
// socket (found through --state or --config, no credentials needed), or
// a remote server with a client certificate or a token.
type clientFlags struct {
	state, config, server, cert, key, ca, token *string
}

func addClientFlags(fs *flag.FlagSet) clientFlags {
	return clientFlags{
		state:  fs.String("state", "", "the local daemon's state directory"),
		config: fs.String("config", "", "the local daemon's config file (TOML), for state_dir and api.socket"),
		server: fs.String("server", "", "a remote daemon's API, https://HOST:8895"),
		cert:   fs.String("cert", "", "client certificate (PEM) for --server"),
		key:    fs.String("key", "", "its key (PEM)"),
		ca:     fs.String("ca", "", "CA certificate that signed the server's (PEM)"),
		token:  fs.String("token", "", "bearer token for --server (default $REPLYGATE_TOKEN)"),
	}
}

// client returns the API client the flags name.
func (f clientFlags) client() (*api.Client, error) {
	if *f.server != "" {
		tok := *f.token
		if tok == "" {
			tok = os.Getenv("REPLYGATE_TOKEN")
		}
		tlsCfg, err := api.ClientTLS(*f.cert, *f.key, *f.ca)
		if err != nil {
			return nil, usageError{err}
		}
		return api.NewRemote(*f.server, tlsCfg, tok)
	}
	for _, fl := range []struct{ name, v string }{{"--cert", *f.cert}, {"--key", *f.key}, {"--ca", *f.ca}, {"--token", *f.token}} {
		if fl.v != "" {
			return nil, usageError{fmt.Errorf("%s needs --server (the local daemon knows you by your uid)", fl.name)}
		}
	}
	cfg, err := loadConfig(*f.config)
	if err != nil {
		return nil, err
	}
	if *f.state != "" {
		cfg.StateDir = *f.state
	}
	dir, err := cfg.ResolveStateDir()
	if err != nil {
		return nil, err
	}
	sock := socketPath(cfg, dir)
	if !isSocket(sock) && *f.state == "" && *f.config == "" && isSocket(systemdSocket) {
		// An admin's shell has none of the service's environment; the
		// unit in contrib/systemd keeps its state here.
		sock = systemdSocket
	}
	if !isSocket(sock) {
		return nil, fmt.Errorf("no replygate daemon at %s (start `replygate serve` first, pass --state DIR or --config FILE, or --server URL)", sock)
	}
	return api.NewLocal(sock), nil
}

// systemdSocket is the local socket of the daemon that
// contrib/systemd/replygate.service runs (StateDirectory=replygate).
const systemdSocket = "/var/lib/replygate/" + socketFile

func isSocket(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

// flagOf names, in the CLI's words, the JSON field an API error names.
var flagOf = map[string]string{
	"subject": "--subject", "body": "--body", "html_body": "--html-file", "from_name": "--from-name",
	"start": "--start", "end": "--end", "interval_days": "--interval", "time_zone": "--tz", "aliases": "--alias",
}

// cliError rewords an API error for the command line.
func cliError(err error) error {
	var ae *api.Error
	if !errors.As(err, &ae) {
		return err
	}
	if field, rest, ok := strings.Cut(ae.Message, ": "); ok && ae.Status == 400 {
		if fl, ok := flagOf[field]; ok {
			return usageError{fmt.Errorf("%s: %s", fl, rest)}
		}
	}
	return fmt.Errorf("%s (HTTP %d)", ae.Message, ae.Status)
}
