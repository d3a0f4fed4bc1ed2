package ingest

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// tcpRTT returns a function reporting the kernel's smoothed round-trip time
// of c (TCP_INFO), for feed status. It unwraps connections that expose
// their underlying net.Conn.
func tcpRTT(c net.Conn) func() (time.Duration, bool) {
	for i := 0; i < 4; i++ {
		if u, ok := c.(interface{ Underlying() net.Conn }); ok {
			c = u.Underlying()
			continue
		}
		if u, ok := c.(interface{ Unwrap() net.Conn }); ok { // netguard
			c = u.Unwrap()
			continue
		}
		break
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return func() (time.Duration, bool) {
		var info *unix.TCPInfo
		var gerr error
		if err := raw.Control(func(fd uintptr) {
			info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		}); err != nil || gerr != nil || info == nil {
			return 0, false
		}
		return time.Duration(info.Rtt) * time.Microsecond, true
	}
}

// sendQueue returns a function reporting how many bytes written to nc the
// peer has not acknowledged yet (SIOCOUTQ), or nil when nc is not a socket
// it can ask. ok is false once the socket is closed.
func sendQueue(nc net.Conn) func() (n int, ok bool) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return func() (int, bool) {
		var n int
		var qerr error
		if err := raw.Control(func(fd uintptr) {
			n, qerr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
		}); err != nil || qerr != nil {
			return 0, false
		}
		return n, true
	}
}
