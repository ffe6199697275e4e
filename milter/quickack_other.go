//go:build !linux

package milter

// quickAck is Linux-only; elsewhere the TCP transport may meet the
// delayed-ACK stall, and a unix socket is the transport to use.
func quickAck(fd uintptr) {}
