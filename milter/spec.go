package milter

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Spec is a listen address in the syntax MTA admins already write in
// main.cf and sendmail.mc: unix:/path (or local:/path), inet:HOST:PORT,
// inet6:[HOST]:PORT, and Sendmail's inet:PORT@HOST.
type Spec struct {
	Network string // "unix", "tcp4", "tcp6" or "tcp"
	Address string // a path, or host:port for net.Listen
}

func (s Spec) String() string {
	switch s.Network {
	case "unix":
		return "unix:" + s.Address
	case "tcp6":
		return "inet6:" + s.Address
	}
	return "inet:" + s.Address
}

// ParseSpec parses a milter listen spec, with an error that shows the
// expected form.
func ParseSpec(spec string) (Spec, error) {
	kind, rest, ok := strings.Cut(spec, ":")
	if !ok || rest == "" {
		return Spec{}, fmt.Errorf("%q: want unix:/path, inet:HOST:PORT or inet6:[HOST]:PORT", spec)
	}
	switch strings.ToLower(kind) {
	case "unix", "local":
		if !strings.HasPrefix(rest, "/") {
			return Spec{}, fmt.Errorf("%q: unix socket path must be absolute", spec)
		}
		if strings.ContainsRune(rest, 0) {
			return Spec{}, fmt.Errorf("%q: NUL in socket path", spec)
		}
		return Spec{"unix", rest}, nil
	case "inet", "inet6":
		network := "tcp4"
		if strings.EqualFold(kind, "inet6") {
			network = "tcp6"
		}
		host, port, err := splitHostPort(rest)
		if err != nil {
			return Spec{}, fmt.Errorf("%q: %v (want %s:HOST:PORT)", spec, err, kind)
		}
		if host == "" || host == "localhost" {
			host = map[string]string{"tcp4": "127.0.0.1", "tcp6": "::1"}[network]
		}
		if ip := net.ParseIP(host); ip == nil {
			return Spec{}, fmt.Errorf("%q: host %q is not an IP address (name lookups are not done here)", spec, host)
		} else if (ip.To4() == nil) == (network == "tcp4") {
			return Spec{}, fmt.Errorf("%q: %s is not an %s address", spec, host, kind)
		}
		return Spec{network, net.JoinHostPort(host, port)}, nil
	}
	return Spec{}, fmt.Errorf("%q: unknown socket type %q (want unix, inet or inet6)", spec, kind)
}

// splitHostPort accepts HOST:PORT, [HOST]:PORT and Sendmail's PORT@HOST.
func splitHostPort(s string) (host, port string, err error) {
	if p, h, ok := strings.Cut(s, "@"); ok {
		host, port = h, p
	} else if host, port, err = net.SplitHostPort(s); err != nil {
		if !strings.Contains(s, ":") {
			return "", "", errors.New("no port")
		}
		return "", "", err
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return "", "", fmt.Errorf("bad port %q", port)
	}
	return strings.Trim(host, "[]"), port, nil
}

// Listen opens the socket for spec. A unix socket left behind by a
// crashed run is removed first (only if nothing answers on it), and the
// new one gets mode perm so that the MTA's user can connect.
func Listen(spec Spec, perm fs.FileMode) (net.Listener, error) {
	if spec.Network != "unix" {
		return net.Listen(spec.Network, spec.Address)
	}
	if fi, err := os.Lstat(spec.Address); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("listen %s: exists and is not a socket", spec.Address)
		}
		if c, err := net.Dial("unix", spec.Address); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen %s: another process is serving it", spec.Address)
		}
		if err := os.Remove(spec.Address); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// Bind in a private directory beside the path, set the mode there,
	// then rename the socket into place: bound at its path, it would have
	// the umask's mode until the chmod, and under umask 000 anyone could
	// connect in that moment whatever socket_mode says.
	dir, err := os.MkdirTemp(filepath.Dir(spec.Address), ".rg")
	if err != nil {
		return nil, err
	}
	defer os.Remove(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, perm); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("chmod %s: %w", spec.Address, err)
	}
	if err := os.Rename(tmp, spec.Address); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, err
	}
	return &unixListener{ln, spec.Address}, nil
}

// unixListener is a socket renamed into place after bind: it reports
// and, on Close, removes its final path, as a net.UnixListener does for
// the path it was bound to.
type unixListener struct {
	*net.UnixListener
	path string
}

func (l *unixListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	if err == nil {
		os.Remove(l.path)
	}
	return err
}
