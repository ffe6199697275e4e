// Command nullmilter is the benchmark's floor for any go-milter milter:
// go-milter v0.5.0 with replygate's exact negotiation (the actions,
// protocol flags and macro lists below are copies of those in
// milter/server.go). At end of message it adds "X-Allow-Auto-Reply: no"
// and accepts, judging nothing.
//
// It is go-milter as it comes: unbuffered reads, no deadlines, and on TCP
// no TCP_QUICKACK, so Postfix's second write of each message waits for
// the milter's delayed ACK (../../../../shared/recipes/postfix.md, finding
// 1). replygate's own connection wrapper avoids that stall.
//
//	nullmilter -listen unix:/run/nullmilter.sock
//	nullmilter -listen inet:127.0.0.1:8899
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"os/signal"
	"strings"
	"syscall"

	gomilter "github.com/emersion/go-milter"
)

// Copied from milter/server.go: keep them equal.
const (
	actions  = gomilter.OptAddHeader | gomilter.OptSetSymList
	protocol = gomilter.OptNoConnReply | gomilter.OptNoHelo | gomilter.OptNoMailReply |
		gomilter.OptNoRcptReply | gomilter.OptNoHeaderReply | gomilter.OptNoEOH |
		gomilter.OptNoBody | gomilter.OptNoData | gomilter.OptNoUnknown
)

var symList = map[gomilter.Stage][]string{
	gomilter.StageMailFrom: {"i", "{daemon_name}", "{client_addr}", "{auth_authen}"},
	gomilter.StageEOH:      {"i"},
	gomilter.StageEOM:      {"i"},
}

// null returns nil from every event whose reply was negotiated away:
// go-milter v0.5.0 writes any non-nil response, which would desynchronise
// the stream.
type null struct{}

func (null) Connect(string, string, uint16, net.IP, *gomilter.Modifier) (gomilter.Response, error) {
	return nil, nil
}
func (null) Helo(string, *gomilter.Modifier) (gomilter.Response, error)     { return nil, nil }
func (null) MailFrom(string, *gomilter.Modifier) (gomilter.Response, error) { return nil, nil }
func (null) RcptTo(string, *gomilter.Modifier) (gomilter.Response, error)   { return nil, nil }
func (null) Header(string, string, *gomilter.Modifier) (gomilter.Response, error) {
	return nil, nil
}
func (null) Headers(textproto.MIMEHeader, *gomilter.Modifier) (gomilter.Response, error) {
	return nil, nil
}
func (null) BodyChunk([]byte, *gomilter.Modifier) (gomilter.Response, error) { return nil, nil }
func (null) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	if err := m.AddHeader("X-Allow-Auto-Reply", "no"); err != nil {
		return nil, err
	}
	return gomilter.RespAccept, nil
}
func (null) Abort(*gomilter.Modifier) error { return nil }

func main() {
	listen := flag.String("listen", "", "where the MTA connects: unix:/path or inet:HOST:PORT")
	flag.Parse()
	if err := run(*listen); err != nil {
		fmt.Fprintln(os.Stderr, "nullmilter:", err)
		os.Exit(1)
	}
}

func run(spec string) error {
	kind, addr, _ := strings.Cut(spec, ":")
	var network string
	switch kind {
	case "unix":
		network = "unix"
	case "inet":
		network = "tcp4"
	default:
		return fmt.Errorf("-listen %q: want unix:/path or inet:HOST:PORT", spec)
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return err
	}
	if network == "unix" { // the listener removes the socket when closed
		// Postfix's smtpd (user postfix) must be able to connect.
		if err := os.Chmod(addr, 0o666); err != nil {
			return err
		}
	}
	srv := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return null{} },
		Actions:   actions,
		Protocol:  protocol,
		SymList:   symList,
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, gomilter.ErrServerClosed) {
		return err
	}
	return nil
}
