//go:build linux && !386

package caddyprogress

import (
	"syscall"
	"unsafe"
)

// Linux's TCP states (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpClose       = 7 // after a reset
)

// socketPeerGone reports whether the peer of the TCP connection on fd
// has closed its end (gone: CLOSE_WAIT, or any state but established)
// or reset it (reset: CLOSE). It asks the kernel (getsockopt TCP_INFO)
// and reads nothing, so the data still queued for the request body is
// left alone.
func socketPeerGone(fd uintptr) (gone, reset bool) {
	var info syscall.TCPInfo
	size := uint32(unsafe.Sizeof(info))
	_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.SOL_TCP, syscall.TCP_INFO,
		uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&size)), 0)
	if errno != 0 {
		return false, false
	}
	return info.State != tcpEstablished, info.State == tcpClose
}

// peerCheckSupported is true where socketPeerGone can tell.
const peerCheckSupported = true
