// Package api is replygate's HTTP API: users set, read and clear their
// vacation and their stamping preference, admins manage everyone's and
// the tokens of integrations. Every request is authenticated (client
// certificate, bearer token, or the peer of the local socket), every
// field is checked before anything is stored, repeated failures are
// slowed down and locked out, and every change leaves one audit line.
package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/replygate/replygate/vacation/store"
)

// Config is what the server needs beyond its store.
type Config struct {
	// ClientCAs verifies client certificates; nil accepts none.
	ClientCAs *x509.CertPool
	// Admins are admin certificates: a siteca.Fingerprint ("sha256:…"), or a
	// subject exactly as x509's Subject.String() prints it
	// ("CN=ops,OU=replygate-admin").
	Admins []string
	// LocalUIDs says which users may use the local socket; they are
	// admins there: the daemon's own user holds its store's credentials
	// anyway, and root holds everything.
	LocalUIDs func(uid uint32) bool
	// Registerer takes the API's own metrics; Gatherer is served at
	// /metrics. Nil: no metrics.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// Health names what /healthz checks ("store", "milter"); each returns
	// nil when up.
	Health map[string]func(context.Context) error
	// Changed is called after a change of settings, so that this
	// instance's gate need not wait for its next reload.
	Changed func()
}

// Server answers the API.
type Server struct {
	st    store.Store
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	guard *guard

	requests     *prometheus.CounterVec
	authFailures prometheus.Counter
	throttled    prometheus.Counter
}

// New returns a server on st.
func New(st store.Store, cfg Config, log *slog.Logger, now func() time.Time) *Server {
	if cfg.LocalUIDs == nil {
		uid := uint32(os.Getuid())
		cfg.LocalUIDs = func(u uint32) bool { return u == uid || u == 0 }
	}
	s := &Server{st: st, cfg: cfg, log: log, now: now, guard: newGuard(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "replygate_api_requests_total", Help: "API requests by route and status code.",
		}, []string{"route", "code"}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "replygate_api_auth_failures_total", Help: "API requests whose credentials did not authenticate.",
		}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "replygate_api_throttled_total", Help: "API requests refused because their client kept failing to authenticate.",
		}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.requests, s.authFailures, s.throttled)
	}
	return s
}

// TLSConfig is the API's TLS: its certificate, TLS 1.2 at least, and
// client certificates asked for but verified by the handlers (see
// byCertificate), so tokens work over the same port.
func TLSConfig(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("api.tls_cert, api.tls_key: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		ClientAuth:   tls.RequestClientCert,
	}, nil
}

// LoadCAs reads PEM CA certificates for client verification.
func LoadCAs(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("api.client_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("api.client_ca %s: no PEM certificate in it", file)
	}
	return pool, nil
}

// LocalConnContext is the http.Server ConnContext of the local socket's
// server: it records the peer's uid for authentication.
func LocalConnContext(ctx context.Context, c net.Conn) context.Context { return withPeer(ctx, c) }

// Handler routes the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	if s.cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	routes := []struct {
		pattern string
		h       handler
	}{
		{"PUT /v1/vacations/{address}", s.putVacation},
		{"GET /v1/vacations/{address}", s.getVacation},
		{"DELETE /v1/vacations/{address}", s.deleteVacation},
		{"GET /v1/vacations", s.listVacations},
		{"PUT /v1/stamping/{address}", s.putStamping},
		{"GET /v1/stamping/{address}", s.getStamping},
		{"POST /v1/tokens", s.createToken},
		{"GET /v1/tokens", s.listTokens},
		{"DELETE /v1/tokens/{id}", s.deleteToken},
	}
	allow := map[string][]string{}
	for _, rt := range routes {
		mux.Handle(rt.pattern, s.authed(rt.h))
		method, path, _ := strings.Cut(rt.pattern, " ")
		allow[path] = append(allow[path], method)
	}
	for path, methods := range allow {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			for _, m := range methods {
				w.Header().Add("Allow", m)
			}
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed")
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not found")
	})
	return s.instrument(mux)
}

// statusWriter remembers the status for the request counter.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// instrument counts requests by route and code, and turns a panic in a
// handler into a logged 500 rather than a dropped connection.
func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("api handler panic", "panic", fmt.Sprint(v), "method", r.Method, "path", r.URL.Path)
				if sw.code == 0 {
					writeError(sw, http.StatusInternalServerError, "internal error")
				}
			}
			route := r.Pattern
			if route == "" {
				route = "other"
			}
			s.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
		}()
		next.ServeHTTP(sw, r)
	})
}

// handler is an authenticated route; its error picks the status.
type handler func(w http.ResponseWriter, r *http.Request, p principal) error

// errForbidden: authenticated, but not for this address.
var errForbidden = errors.New("forbidden")

// authed authenticates the request, under the guard, then runs h.
func (s *Server) authed(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr := clientAddr(r.RemoteAddr)
		key := addr + "|" + credential(r)
		if wait := s.guard.admit(key, s.now()); wait > 0 {
			s.throttled.Inc()
			w.Header().Set("Retry-After", strconv.Itoa(int(wait.Round(time.Second)/time.Second)+1))
			writeError(w, http.StatusTooManyRequests, "too many failed authentications from "+addr+"; try again later")
			return
		}
		p, err := s.authenticate(r)
		var ue errUnauthenticated
		failed := errors.As(err, &ue)
		n, locked := s.guard.judged(key, failed, s.now())
		if failed {
			s.authFailures.Inc()
			s.log.Warn("api auth failed", "remote", addr, "reason", ue.reason, "failures", n, "locked_out", locked,
				"method", r.Method, "path", r.URL.Path)
			w.Header().Set("WWW-Authenticate", `Bearer realm="replygate"`)
			writeError(w, http.StatusUnauthorized, "authentication required: a client certificate or a bearer token")
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if err := h(w, r, p); err != nil {
			s.fail(w, r, err)
		}
	})
}

// credential names what r authenticates with, for the guard: failures
// are counted per client address and credential, so that a client who
// fails on purpose slows down its own guesses, not other users of the
// same address (a NAT, the local machine) with credentials of their own.
// A token is named by its public id: guessing one token's secret is
// throttled however the guesses are spread.
func credential(r *http.Request) string {
	if _, ok := peerUID(r.Context()); ok {
		return "local"
	}
	if h := r.Header.Get("Authorization"); h != "" {
		if id, _, ok := splitToken(bearer(h)); ok {
			return "token:" + id
		}
		return "token"
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return "cert"
	}
	return "none"
}

// fail answers err: a 4xx naming the problem, or a 500 whose cause goes
// only to the log.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var fe *FieldError
	var ie *store.InvalidError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request: larger than %d bytes", mbe.Limit))
	case errors.As(err, &fe):
		writeError(w, http.StatusBadRequest, fe.Error())
	case errors.As(err, &ie):
		writeError(w, http.StatusBadRequest, ie.Error())
	case errors.Is(err, errUnsupportedType):
		writeError(w, http.StatusUnsupportedMediaType, "request: want Content-Type: application/json")
	case errors.Is(err, errForbidden):
		writeError(w, http.StatusForbidden, "forbidden: these credentials do not manage this address")
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "not found")
	case errors.Is(err, store.ErrAddressTaken):
		writeError(w, http.StatusConflict, err.Error()) // names the field and the address
	case store.Unreachable(err):
		// Nothing was stored; the client may try again.
		s.log.Warn("api request failed: store unreachable", "method", r.Method, "path", r.URL.Path, "err", err)
		w.Header().Set("Retry-After", "30")
		writeError(w, http.StatusServiceUnavailable, "store unavailable; nothing was changed, try again later")
	default:
		s.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

var errUnsupportedType = errors.New("unsupported content type")

// body bounds r's body and checks its type: application/json, always. A
// browser sends a cross-site request with another type, or none, without
// asking first (no CORS preflight), and with a client certificate
// installed it would authenticate; requiring JSON keeps those out.
func body(w http.ResponseWriter, r *http.Request) (*http.Request, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return r, errUnsupportedType
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
	return r, nil
}

// address reads and authorizes the {address} of the path. It answers
// 403 before the store is asked, so nobody learns whether another
// user's vacation exists.
func address(r *http.Request, p principal) (string, error) {
	addr, err := ParseAddress("address", r.PathValue("address"))
	if err != nil {
		return "", err
	}
	if !p.may(addr) {
		return "", errForbidden
	}
	return addr, nil
}

// audit writes the one line a change leaves (who, what, which address)
// and tells the daemon that settings changed (Config.Changed).
func (s *Server) audit(r *http.Request, p principal, action, target string) {
	s.log.Info("audit", "who", p.who, "action", action, "target", target, "remote", clientAddr(r.RemoteAddr))
	if s.cfg.Changed != nil {
		s.cfg.Changed()
	}
}

func (s *Server) putVacation(w http.ResponseWriter, r *http.Request, p principal) error {
	addr, err := address(r, p)
	if err != nil {
		return err
	}
	if r, err = body(w, r); err != nil {
		return err
	}
	v, err := DecodeVacation(r.Body, addr, s.now())
	if err != nil {
		return err
	}
	// Aliases name the user for the gate and the responder: only
	// addresses this principal manages may be claimed as aliases, or a
	// user could take another's mail for their own vacation.
	for _, a := range v.Aliases {
		if !p.admin && !p.may(a) {
			return fieldErr("aliases", "%s is not an address these credentials manage", a)
		}
	}
	v.Updated = s.now()
	saved, err := s.st.PutVacation(r.Context(), v)
	if err != nil {
		return err
	}
	s.audit(r, p, "vacation.set", addr)
	writeJSON(w, http.StatusOK, FromStore(saved))
	return nil
}

func (s *Server) getVacation(w http.ResponseWriter, r *http.Request, p principal) error {
	addr, err := address(r, p)
	if err != nil {
		return err
	}
	v, err := s.st.GetVacation(r.Context(), addr)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, FromStore(v))
	return nil
}

func (s *Server) deleteVacation(w http.ResponseWriter, r *http.Request, p principal) error {
	addr, err := address(r, p)
	if err != nil {
		return err
	}
	if err := s.st.DeleteVacation(r.Context(), addr); err != nil {
		return err
	}
	s.audit(r, p, "vacation.clear", addr)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listVacations shows admins everyone's, others their own.
func (s *Server) listVacations(w http.ResponseWriter, r *http.Request, p principal) error {
	out := []Vacation{}
	if !p.admin {
		// A user's own addresses only: never load everyone's to filter.
		for _, a := range p.addresses {
			v, err := s.st.GetVacation(r.Context(), a)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			out = append(out, FromStore(v))
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
	vs, err := s.st.ListVacations(r.Context())
	if err != nil {
		return err
	}
	for _, v := range vs {
		out = append(out, FromStore(v))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) putStamping(w http.ResponseWriter, r *http.Request, p principal) error {
	addr, err := address(r, p)
	if err != nil {
		return err
	}
	if r, err = body(w, r); err != nil {
		return err
	}
	on, err := DecodeStamping(r.Body)
	if err != nil {
		return err
	}
	if err := s.st.SetStampAll(r.Context(), addr, on); err != nil {
		return err
	}
	s.audit(r, p, "stamping.set:"+strconv.FormatBool(on), addr)
	writeJSON(w, http.StatusOK, Stamping{Address: addr, Always: &on})
	return nil
}

func (s *Server) getStamping(w http.ResponseWriter, r *http.Request, p principal) error {
	addr, err := address(r, p)
	if err != nil {
		return err
	}
	on, err := s.st.StampAll(r.Context(), addr)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, Stamping{Address: addr, Always: &on})
	return nil
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, p principal) error {
	if !p.admin {
		return errForbidden
	}
	r, err := body(w, r)
	if err != nil {
		return err
	}
	req, err := DecodeTokenRequest(r.Body)
	if err != nil {
		return err
	}
	secret, t, err := GenerateToken(req.Name, req.Admin, req.Addresses, s.now())
	if err != nil {
		return err
	}
	if err := s.st.CreateToken(r.Context(), t); err != nil {
		return err
	}
	s.audit(r, p, "token.create", t.ID)
	writeJSON(w, http.StatusCreated, NewToken{TokenInfo: tokenInfo(t), Token: secret})
	return nil
}

func tokenInfo(t store.Token) TokenInfo {
	i := TokenInfo{ID: t.ID, Name: t.Name, Admin: t.Admin, Addresses: t.Addresses, Created: t.Created}
	if i.Addresses == nil {
		i.Addresses = []string{}
	}
	return i
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, p principal) error {
	if !p.admin {
		return errForbidden
	}
	ts, err := s.st.ListTokens(r.Context())
	if err != nil {
		return err
	}
	out := make([]TokenInfo, len(ts))
	for i, t := range ts {
		out[i] = tokenInfo(t)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request, p principal) error {
	if !p.admin {
		return errForbidden
	}
	id := r.PathValue("id")
	if err := s.st.DeleteToken(r.Context(), id); err != nil {
		return err
	}
	s.audit(r, p, "token.revoke", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// healthz reports each check; 503 when any is down.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	out := map[string]string{}
	code := http.StatusOK
	for name, check := range s.cfg.Health {
		if err := check(ctx); err != nil {
			// The cause (a database host, a user name) goes to the log
			// only: /healthz answers without credentials.
			s.log.Warn("health check failed", "check", name, "err", err)
			out[name] = "down"
			code = http.StatusServiceUnavailable
		} else {
			out[name] = "up"
		}
	}
	out["status"] = "ok"
	if code != http.StatusOK {
		out["status"] = "degraded"
	}
	writeJSON(w, code, out)
}
