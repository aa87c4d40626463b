//go:build linux && !386

package caddyprogress

import (
	"syscall"
	"unsafe"
)

// tcpEstablished is Linux's TCP_ESTABLISHED state (include/net/tcp_states.h).
const tcpEstablished = 1

// socketPeerGone reports whether the TCP connection on fd has left the
// established state: the peer closed its end (CLOSE_WAIT) or reset it
// (CLOSE). It asks the kernel (getsockopt TCP_INFO) and reads nothing,
// so the data still queued for the request body is left alone.
func socketPeerGone(fd uintptr) bool {
	var info syscall.TCPInfo
	size := uint32(unsafe.Sizeof(info))
	_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.SOL_TCP, syscall.TCP_INFO,
		uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&size)), 0)
	return errno == 0 && info.State != tcpEstablished
}

// peerCheckSupported is true where socketPeerGone can tell.
const peerCheckSupported = true
