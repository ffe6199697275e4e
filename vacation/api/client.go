package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Client speaks the API for the CLI: to the local daemon over its unix
// socket, or to a remote one over HTTPS.
type Client struct {
	base  string
	hc    *http.Client
	token string
}

// Error is an answer other than 2xx: its status and the server's message.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

// NewLocal returns a client of the daemon whose local socket is path;
// the daemon knows the caller by its uid.
func NewLocal(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	return &Client{base: "http://localhost", hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// NewRemote returns a client of the API at base (https://host:8895),
// with tlsCfg (see ClientTLS) and, when token is not "", a bearer token.
func NewRemote(base string, tlsCfg *tls.Config, token string) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("--server %q: want https://HOST:PORT", base)
	}
	if ip := net.ParseIP(u.Hostname()); u.Scheme == "http" && u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
		// A token or a vacation text must not cross a network in clear
		// text; the daemon refuses such a listener, and so does the CLI.
		return nil, fmt.Errorf("--server %q: plain http only to loopback; use https://", base)
	}
	tr := &http.Transport{TLSClientConfig: tlsCfg}
	return &Client{base: strings.TrimSuffix(base, "/"), hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}, token: token}, nil
}

// ClientTLS loads a client certificate (certFile and keyFile, both or
// neither) and the CA that signed the server's (caFile; "" trusts the
// system's roots).
func ClientTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("--cert and --key: give both or neither")
	}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--cert, --key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--ca %s: no PEM certificate in it", caFile)
		}
	}
	return cfg, nil
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = resp.Status
		}
		return &Error{Status: resp.StatusCode, Message: e.Error}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	return json.Unmarshal(b, out)
}

func escape(addr string) string { return url.PathEscape(addr) }

// PutVacation sets address's vacation.
func (c *Client) PutVacation(ctx context.Context, address string, req VacationRequest) (Vacation, error) {
	var v Vacation
	err := c.do(ctx, http.MethodPut, "/v1/vacations/"+escape(address), req, &v)
	return v, err
}

// GetVacation reads address's vacation.
func (c *Client) GetVacation(ctx context.Context, address string) (Vacation, error) {
	var v Vacation
	err := c.do(ctx, http.MethodGet, "/v1/vacations/"+escape(address), nil, &v)
	return v, err
}

// DeleteVacation clears address's vacation.
func (c *Client) DeleteVacation(ctx context.Context, address string) error {
	return c.do(ctx, http.MethodDelete, "/v1/vacations/"+escape(address), nil, nil)
}

// ListVacations lists the vacations the caller manages.
func (c *Client) ListVacations(ctx context.Context) ([]Vacation, error) {
	var vs []Vacation
	err := c.do(ctx, http.MethodGet, "/v1/vacations", nil, &vs)
	return vs, err
}

// SetStamping sets whether all of address's own mail is stamped.
func (c *Client) SetStamping(ctx context.Context, address string, always bool) (bool, error) {
	var s Stamping
	err := c.do(ctx, http.MethodPut, "/v1/stamping/"+escape(address), Stamping{Always: &always}, &s)
	return s.Always != nil && *s.Always, err
}

// GetStamping reads address's stamping preference.
func (c *Client) GetStamping(ctx context.Context, address string) (bool, error) {
	var s Stamping
	err := c.do(ctx, http.MethodGet, "/v1/stamping/"+escape(address), nil, &s)
	return s.Always != nil && *s.Always, err
}

// CreateToken makes a token (admins only); the secret is in the answer.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (NewToken, error) {
	var t NewToken
	err := c.do(ctx, http.MethodPost, "/v1/tokens", req, &t)
	return t, err
}

// ListTokens lists tokens, without their secrets (admins only).
func (c *Client) ListTokens(ctx context.Context) ([]TokenInfo, error) {
	var ts []TokenInfo
	err := c.do(ctx, http.MethodGet, "/v1/tokens", nil, &ts)
	return ts, err
}

// RevokeToken deletes token id (admins only).
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/tokens/"+escape(id), nil, nil)
}
