package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/replygate/replygate/internal/siteca"
)

// caCmd runs `replygate ca init|issue|serve-cert`: the site CA that makes
// the client certificates users authenticate to the API with, and the
// API's server certificate, so admins need no openssl recipes.
func caCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New("want init, issue or serve-cert")}
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "init", "issue", "serve-cert":
	default:
		return usageError{fmt.Errorf("unknown ca command %q (want init, issue or serve-cert)", sub)}
	}
	flags := flag.NewFlagSet("ca "+sub, flag.ContinueOnError)
	dirFlag := flags.String("dir", "", "CA directory (default: STATE/ca)")
	stateDir := flags.String("state", "", "the daemon's state directory")
	cfgPath := flags.String("config", "", "config file (TOML), for state_dir")
	force := flags.Bool("force", false, "replace existing files (init: a new CA invalidates every certificate it signed)")
	days := flags.Int("days", 0, fmt.Sprintf("validity in days (default %d for the CA, %d for certificates)",
		siteca.DefaultCADays, siteca.DefaultCertDays))
	out, admin := new(string), new(bool)
	if sub != "init" {
		flags.StringVar(out, "out", ".", "directory for the certificate and its key")
	}
	if sub == "issue" {
		flags.BoolVar(admin, "admin", false, "an admin certificate (prints the config line that makes it one)")
	}
	pos, err := parseFlagsHelp(flags, args, stdout)
	if err != nil {
		return err
	}
	switch {
	case sub == "init" && len(pos) != 0:
		return usageError{fmt.Errorf("ca init: want no arguments, got %q", pos)}
	case sub == "issue" && len(pos) != 1:
		return usageError{fmt.Errorf("ca issue: want one ADDRESS, got %d arguments", len(pos))}
	case sub == "serve-cert" && len(pos) == 0:
		return usageError{errors.New("ca serve-cert: want at least one HOST (DNS name or IP address)")}
	}
	if *days < 0 {
		return usageError{fmt.Errorf("--days %d: must be positive", *days)}
	}
	dir := *dirFlag
	if dir == "" {
		cfg, err := loadConfig(*cfgPath)
		if err != nil {
			return err
		}
		if *stateDir != "" {
			cfg.StateDir = *stateDir
		}
		state, err := cfg.ResolveStateDir()
		if err != nil {
			return err
		}
		dir = filepath.Join(state, "ca")
	}
	opt := siteca.Options{Days: *days, Force: *force}

	if sub == "init" {
		if err := siteca.Init(dir, opt); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "created the site CA in %s\n", dir)
		return nil
	}
	ca, err := siteca.Load(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no site CA in %s (run `replygate ca init` first, or pass --dir DIR): %w", dir, err)
	}
	if err != nil {
		return err
	}
	var name string
	var certPEM, keyPEM []byte
	if sub == "issue" {
		addr, err := siteca.ParseAddress(pos[0])
		if err != nil {
			return err
		}
		// Atoms may hold '/', which must not reach a file name.
		if strings.ContainsAny(addr, `/\`) {
			return fmt.Errorf("address %q: '/' cannot be part of a file name", addr)
		}
		name = addr
		certPEM, keyPEM, err = ca.IssueClient(addr, *admin, opt)
		if err != nil {
			return err
		}
	} else {
		name = "server"
		certPEM, keyPEM, err = ca.IssueServer(pos, opt)
		if err != nil {
			return err
		}
	}
	certPath, err := filepath.Abs(filepath.Join(*out, name+".crt"))
	if err != nil {
		return err
	}
	keyPath := strings.TrimSuffix(certPath, ".crt") + ".key"
	// A new --out directory holds a private key: only its owner reads it.
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	if err := siteca.WritePair(certPath, keyPath, certPEM, keyPEM, *force); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\nwrote %s\n", certPath, keyPath)

	switch {
	case sub == "issue" && *admin:
		cert, err := siteca.ReadCert(certPath)
		if err != nil {
			return err
		}
		fp := siteca.Fingerprint(cert)
		fmt.Fprintf(stdout, "admin fingerprint: %s\nadd to the config:\n[api]\nadmins = [%s]\n", fp, tomlString(fp))
	case sub == "serve-cert":
		caPath, err := filepath.Abs(filepath.Join(dir, siteca.CertFile))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "add to the config:\n[api]\ntls_cert = %s\ntls_key = %s\nclient_ca = %s\n",
			tomlString(certPath), tomlString(keyPath), tomlString(caPath))
	}
	return nil
}

// tomlString quotes s as a TOML basic string: JSON's escapes (\" \\ \n
// \uXXXX) are all valid TOML.
func tomlString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}
