package milter

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"time"
)

// answerOverload serves a connection that arrives when every session slot
// is taken. Closing it would leave the MTA to its own default action
// (Postfix's is tempfail); instead replygate answers as the admin chose:
// it negotiates every event with a reply and answers the first one
// (CONNECT) with accept, so the MTA skips the milter for this SMTP
// session, or with tempfail. The exchange is a few hundred bytes under a
// short deadline, written by hand because go-milter cannot answer before
// its backend runs.
func answerOverload(c net.Conn, action FailAction, log *slog.Logger) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	reply := byte('a')
	if action == FailTempfail {
		reply = 't'
	}
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 || n > 64<<10 {
			return
		}
		pkt := make([]byte, n)
		if _, err := io.ReadFull(c, pkt); err != nil {
			return
		}
		switch pkt[0] {
		case 'O': // OPTNEG: version 2, no actions, every event with a reply
			var out [17]byte
			binary.BigEndian.PutUint32(out[0:], 13)
			out[4] = 'O'
			binary.BigEndian.PutUint32(out[5:], 2)
			c.Write(out[:])
		case 'D': // macros: no reply
		case 'Q', 'A':
			return
		default: // the first event that wants a reply
			c.Write([]byte{0, 0, 0, 1, reply})
			log.Warn("session limit reached, answered per fail action", "action", string(action))
			return
		}
	}
}
