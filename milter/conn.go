package milter

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// conn wraps one MTA connection for go-milter, adding what v0.5.0 lacks:
//
//   - a read buffer, so go-milter's two reads per packet (length, then
//     payload) cost one system call for several packets;
//   - an idle deadline re-armed before every read from the network, so a
//     stuck or half-open MTA connection cannot hold a session forever;
//   - on TCP, TCP_QUICKACK re-armed before every read. Postfix writes the
//     header events as a second packet that Nagle holds until the first
//     is ACKed; without a quick ACK each message waits for the 40 ms
//     delayed-ACK timer (../shared/recipes/postfix.md, finding 1);
//   - the shutdown drain: once the server closes, a session that is
//     between messages reads end-of-file, and one in a message is let
//     finish it.
type conn struct {
	net.Conn
	br       *bufio.Reader
	sess     *session
	idle     time.Duration
	raw      syscall.RawConn // nil unless TCP
	closed   chan struct{}
	closeErr error
	once     sync.Once
}

func newConn(c net.Conn, idle time.Duration) *conn {
	w := &conn{Conn: c, idle: idle, closed: make(chan struct{})}
	w.br = bufio.NewReaderSize(netReader{w}, 4096)
	if tc, ok := c.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			w.raw = raw
		}
	}
	return w
}

func (c *conn) Read(p []byte) (int, error) { return c.br.Read(p) }

func (c *conn) Write(p []byte) (int, error) {
	if c.idle > 0 {
		c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	}
	return c.Conn.Write(p)
}

func (c *conn) Close() error {
	c.once.Do(func() {
		c.closeErr = c.Conn.Close()
		close(c.closed)
	})
	return c.closeErr
}

// netReader is the bufio.Reader's source: the network, under the deadline
// and drain rules.
type netReader struct{ c *conn }

func (r netReader) Read(p []byte) (int, error) {
	c := r.c
	for {
		if c.idle > 0 {
			c.Conn.SetReadDeadline(time.Now().Add(c.idle))
		}
		// Checked after the deadline is set: a Shutdown that began before
		// is seen here, one that begins after moves the deadline to now.
		if c.sess.draining() {
			return 0, io.EOF
		}
		if c.raw != nil {
			c.raw.Control(quickAck)
		}
		n, err := c.Conn.Read(p)
		// Shutdown wakes idle readers by moving the deadline to now; a
		// session inside a message is let finish it.
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) && c.sess.srv.closing.Load() {
			if c.sess.inMessage.Load() {
				continue
			}
			return 0, io.EOF
		}
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			c.sess.log.Info("session idle too long, closing", "idle", c.idle)
			return 0, io.EOF
		}
		return n, err
	}
}

// oneConn is a net.Listener that yields one connection and then blocks
// until that connection is closed. It lets replygate run one go-milter
// Server per MTA connection, which gives the connection a state of its
// own: go-milter v0.5.0 makes a new backend after every message, so
// without it the second message of an SMTP session would never see the
// Connect data (../shared/recipes/sendmail.md, section c).
type oneConn struct {
	c    *conn
	done bool
}

func (l *oneConn) Accept() (net.Conn, error) {
	if !l.done {
		l.done = true
		return l.c, nil
	}
	<-l.c.closed
	return nil, net.ErrClosed
}

func (l *oneConn) Close() error   { return nil }
func (l *oneConn) Addr() net.Addr { return l.c.LocalAddr() }
