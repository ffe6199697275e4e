package milter

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/replygate/replygate/policy"
)

func frame(code byte, data string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)+1))
	return append(append(b, code), data...)
}

// FuzzFrames writes arbitrary bytes to a live server, as a broken or
// hostile MTA would, and then checks that a real session is still served.
func FuzzFrames(f *testing.F) {
	optneg := frame('O', "\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff")
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add(append(append([]byte{}, optneg...), frame('C', "host\x004\x00\x19127.0.0.1\x00")...))
	f.Add(append(append([]byte{}, optneg...), frame('M', "<a@example.org>\x00")...))
	f.Add(append(append(append([]byte{}, optneg...), frame('L', "Subject\x00hi\x00")...), frame('E', "")...))
	f.Add(append(append([]byte{}, optneg...), frame('L', "no-nul")...))
	f.Add(append(append([]byte{}, optneg...), frame('D', "")...))
	f.Add(append(append([]byte{}, optneg...), frame('D', "Mi\x00")...))

	p, err := policy.New(policy.DefaultConfig())
	if err != nil {
		f.Fatal(err)
	}
	srv := New(p, Config{IdleTimeout: 2 * time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go srv.Serve(ln)
	addr := ln.Addr().String()
	client := gomilter.NewClientWithOptions("tcp", addr, gomilter.ClientOptions{
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, ActionMask: gomilter.OptAddHeader})

	f.Fuzz(func(t *testing.T, garbage []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		c.Write(garbage)
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c) // whatever the server answers, it must end the session
		c.Close()
		if err := oneMessage(client); err != nil {
			t.Fatalf("server no longer serves after %q: %v", garbage, err)
		}
	})
}
