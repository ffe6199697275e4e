package milter

import "syscall"

// quickAck asks the kernel to ACK at once. Errors are ignored: without it
// the connection only becomes slower.
func quickAck(fd uintptr) {
	syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
}
