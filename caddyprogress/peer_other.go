//go:build !linux || 386

package caddyprogress

// socketPeerGone cannot tell on this system: the client's leaving shows
// only when a read fails or the request's context ends.
func socketPeerGone(uintptr) (gone, reset bool) { return false, false }

// peerCheckSupported is true where socketPeerGone can tell.
const peerCheckSupported = false
