package milter

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/replygate/replygate/policy"
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
//     finish it;
//   - header events taken before go-milter sees them (see frames).
type conn struct {
	net.Conn
	br       *bufio.Reader
	frame    [5]byte // length and command of the frame being handed on
	pending  []byte  // the part of frame go-milter has not read yet
	rest     int     // payload bytes of that frame still to hand on
	buf      []byte  // a header frame's payload
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

// Read hands go-milter the MTA's frames, all but header events, which
// nextFrame gives to the session itself.
func (c *conn) Read(p []byte) (int, error) {
	for len(c.pending) == 0 && c.rest == 0 {
		if err := c.nextFrame(); err != nil {
			return 0, err
		}
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if len(p) > c.rest {
		p = p[:c.rest]
	}
	n, err := c.br.Read(p)
	c.rest -= n
	return n, err
}

// Header frames (SMFIC_HEADER, "name NUL value NUL") are read here and
// never reach go-milter, which mishandles hostile ones in three ways:
//
//   - a NUL inside the value splits it into three strings, which go-milter
//     answers with "continue" although no reply was negotiated. The MTA
//     takes that stray reply as the end-of-message answer and the stream
//     is out of step: the stamp is lost without a warning;
//   - it keeps every field in a map of its own, unbounded and not cleared
//     between the messages of a session unless the MTA sends ABORT;
//   - a frame over 1 MiB ends the session, so the MTA applies its
//     default action (Postfix's is tempfail) instead of our verdict.
//
// Postfix and Sendmail cut header fields far below 1 MiB
// (header_size_limit, MaxHeadersLength), so these come only from a broken
// or hostile peer; they get a verdict all the same.
const (
	// maxHeaderFrame is the largest header frame read into memory: the
	// policy keeps no longer field. A longer one is read and dropped.
	maxHeaderFrame = policy.MaxFieldBytes + 1024
	// maxDropFrame ends the session: no MTA sends such a field.
	maxDropFrame = 256 << 20
)

// nextFrame reads the next frame's length and command. A header frame is
// consumed and handed to the session; any other frame is set up to be
// passed on to go-milter as it came, which judges its length itself.
func (c *conn) nextFrame() error {
	if _, err := io.ReadFull(c.br, c.frame[:4]); err != nil {
		return err // io.EOF between frames, as go-milter expects
	}
	n := binary.BigEndian.Uint32(c.frame[:4])
	if n == 0 {
		c.pending = c.frame[:4]
		return nil
	}
	if _, err := io.ReadFull(c.br, c.frame[4:5]); err != nil {
		return io.ErrUnexpectedEOF
	}
	if c.frame[4] != byte(gomilter.CodeHeader) {
		c.pending, c.rest = c.frame[:5], int(n-1)
		return nil
	}
	size := int64(n - 1)
	if size > maxHeaderFrame {
		if size > maxDropFrame {
			return fmt.Errorf("header frame of %d bytes", size)
		}
		if _, err := io.CopyN(io.Discard, c.br, size); err != nil {
			return io.ErrUnexpectedEOF
		}
		c.sess.headerDropped()
		return nil
	}
	if cap(c.buf) < int(size) {
		c.buf = make([]byte, size)
	}
	data := c.buf[:size]
	if _, err := io.ReadFull(c.br, data); err != nil {
		return io.ErrUnexpectedEOF
	}
	c.sess.headerFrame(data)
	if cap(c.buf) > 4096 {
		c.buf = nil // a big field is rare: do not keep its buffer for the session
	}
	return nil
}

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
