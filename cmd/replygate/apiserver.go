package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/replygate/replygate/config"
	"github.com/replygate/replygate/milter"
	"github.com/replygate/replygate/vacation/api"
)

// socketFile is the local API socket in the state directory.
const socketFile = "api.sock"

// apiListeners are the API's two doors: TCP (HTTPS when api.tls_cert is
// set, else loopback only) and the local unix socket for the CLI.
type apiListeners struct {
	tcp, local net.Listener
	tls        *tls.Config // nil: plain HTTP on loopback
	socket     string
	servers    []*http.Server
}

// socketPath is where the local API socket lives for cfg.
func socketPath(cfg config.Config, state string) string {
	if cfg.API.Socket != "" {
		return cfg.API.Socket
	}
	return filepath.Join(state, socketFile)
}

// listenAPI opens both doors. config.Validate has already refused a
// listen address beyond loopback without TLS.
func listenAPI(cfg config.Config, state string) (*apiListeners, error) {
	a := &apiListeners{socket: socketPath(cfg, state)}
	if cfg.API.TLSCert != "" {
		var err error
		if a.tls, err = api.TLSConfig(cfg.API.TLSCert, cfg.API.TLSKey); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return nil, fmt.Errorf("api.listen: %w", err)
	}
	a.tcp = ln
	if a.local, err = listenSocket(a.socket); err != nil {
		ln.Close()
		return nil, err
	}
	return a, nil
}

// listenSocket opens the local socket, mode 0600: who can connect is
// who the daemon trusts as admin (its own user and root, by SO_PEERCRED).
// milter.Listen replaces a socket left by a crash, refuses one that a
// running daemon answers on, and sets the mode before the socket appears
// at its path.
func listenSocket(path string) (net.Listener, error) {
	ln, err := milter.Listen(milter.Spec{Network: "unix", Address: path}, 0o600)
	if err != nil {
		return nil, fmt.Errorf("api.socket: %w", err)
	}
	return ln, nil
}

// addr names the TCP door for the ready line.
func (a *apiListeners) addr() string {
	scheme := "http://"
	if a.tls != nil {
		scheme = "https://"
	}
	return scheme + a.tcp.Addr().String()
}

// serve answers h on both doors; each server's end goes to errc.
func (a *apiListeners) serve(h http.Handler, logger *slog.Logger, errc chan<- error) {
	mk := func() *http.Server {
		return &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		}
	}
	tcp, local := mk(), mk()
	local.ConnContext = api.LocalConnContext
	tcp.TLSConfig = a.tls
	a.servers = []*http.Server{tcp, local}
	go func() {
		var err error
		if a.tls != nil {
			err = tcp.ServeTLS(a.tcp, "", "")
		} else {
			err = tcp.Serve(a.tcp)
		}
		errc <- err
	}()
	go func() { errc <- local.Serve(a.local) }()
}

// shutdown stops both servers and removes the socket.
func (a *apiListeners) shutdown(ctx context.Context) error {
	var errs []error
	for _, s := range a.servers {
		errs = append(errs, s.Shutdown(ctx))
	}
	os.Remove(a.socket)
	return errors.Join(errs...)
}

// apiConfig is the API's authentication as the config sets it.
func apiConfig(cfg config.Config) (api.Config, error) {
	c := api.Config{Admins: cfg.API.Admins}
	if cfg.API.ClientCA != "" {
		pool, err := api.LoadCAs(cfg.API.ClientCA)
		if err != nil {
			return c, err
		}
		c.ClientCAs = pool
	}
	return c, nil
}
