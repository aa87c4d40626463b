package caddyprogress

import (
	"context"
	"errors"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// An HTTP/1 client that leaves while reverse_proxy is blocked writing
// its body to an upstream that does not read goes unnoticed by Go's
// HTTP/1 server: nothing reads from the connection, so no read fails,
// and the request's context is not cancelled until the body has been
// read to its end. clientPresence notices it: every presenceEvery, it asks the
// kernel about the connection of each HTTP/1 upload whose body has
// stalled for stallAfter (nothing is read from it), and when the client
// has closed or reset it, ends the request's context. reverse_proxy then
// gives up on the upstream at once (499), and the record ends aborted.
// The body's Read is not involved: it only stores its last read time,
// which it does anyway.
//
// A client that closes gracefully while its unsent body is queued
// behind the proxy's full receive window cannot be seen at all: its FIN
// waits behind the data. Its close shows when its kernel gives up and
// resets the connection, or when the answer reaches it (answerLost).
const (
	presenceEvery = 250 * time.Millisecond
	stallAfter    = 500 * time.Millisecond

	// answerCheckFor is how long answerLost waits for a reset after
	// flushing an answer that went out before the body ended.
	answerCheckFor   = 250 * time.Millisecond
	answerCheckEvery = 10 * time.Millisecond
)

// errClientGone is the cause of a request context ended by clientPresence.
var errClientGone = errors.New("the client closed its connection while the body was stalled")

// presentClient is one HTTP/1 upload followed by clientPresence.
type presentClient struct {
	upload *upload
	fd     syscall.RawConn
	leave  context.CancelCauseFunc // ends the request's context
	gone   atomic.Bool             // the client was seen gone
}

// peerGone reports whether the client has closed or reset the
// connection, without reading from it.
func (w *presentClient) peerGone() (gone, reset bool) {
	if err := w.fd.Control(func(fd uintptr) { gone, reset = socketPeerGone(fd) }); err != nil {
		return false, false // the connection is already closed on this side
	}
	return gone, reset
}

// answerLost flushes an answer written before the body ended, and
// reports whether it could not reach the client: the flush failed, or
// the client's kernel reset the connection on receiving it (a client
// that left while its body was queued). A client that reads the answer
// and closes gracefully is not taken for one that left. The answer is
// already on its way; only the record's end waits, at most
// answerCheckFor.
func (w *presentClient) answerLost(rw http.ResponseWriter) bool {
	if err := http.NewResponseController(rw).Flush(); err != nil {
		return true
	}
	deadline := time.Now().Add(answerCheckFor)
	for {
		if _, reset := w.peerGone(); reset {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(answerCheckEvery)
	}
}

// stalled reports whether the upload's body is still unfinished and has
// had no read for stallAfter.
func (w *presentClient) stalled(now time.Time) bool {
	u := w.upload
	return u.currentState() == progress.StateUploading &&
		now.Sub(u.startedAt)-time.Duration(u.lastRead.Load()) >= stallAfter
}

// clientPresence is the set of observed uploads, and the goroutine that
// looks at them while there are any.
type clientPresence struct {
	mu      sync.Mutex
	uploads map[*presentClient]struct{}
	running bool
}

// clients observes the HTTP/1 uploads of every handler: they outlive the
// config that started them.
var clients = &clientPresence{uploads: make(map[*presentClient]struct{})}

// observe follows u's client on conn until the returned stop is called;
// ctx is the request's, and the returned context the one to serve the
// request with. It returns nil and ctx itself when the connection
// cannot be looked at (not TCP, or not on Linux).
func (cw *clientPresence) observe(ctx context.Context, u *upload, conn net.Conn) (*presentClient, context.Context, func()) {
	fd := rawConn(conn)
	if fd == nil || !peerCheckSupported {
		return nil, ctx, func() {}
	}
	ctx, leave := context.WithCancelCause(ctx)
	w := &presentClient{upload: u, fd: fd, leave: leave}
	cw.mu.Lock()
	cw.uploads[w] = struct{}{}
	if !cw.running {
		cw.running = true
		go cw.run()
	}
	cw.mu.Unlock()
	return w, ctx, func() {
		cw.mu.Lock()
		delete(cw.uploads, w)
		cw.mu.Unlock()
		leave(nil)
	}
}

// run looks at the stalled uploads every presenceEvery, and returns once
// there are none left to observe.
func (cw *clientPresence) run() {
	ticker := time.NewTicker(presenceEvery)
	defer ticker.Stop()
	var stalled []*presentClient
	for now := range ticker.C {
		stalled = stalled[:0]
		cw.mu.Lock()
		if len(cw.uploads) == 0 {
			cw.running = false
			cw.mu.Unlock()
			return
		}
		for w := range cw.uploads {
			if !w.gone.Load() && w.stalled(now) {
				stalled = append(stalled, w)
			}
		}
		cw.mu.Unlock()
		for _, w := range stalled {
			if gone, _ := w.peerGone(); gone {
				w.gone.Store(true)
				w.leave(errClientGone)
			}
		}
	}
}

// rawConn returns the socket under conn (a TLS connection's too), or
// nil if there is none.
func rawConn(conn net.Conn) syscall.RawConn {
	for conn != nil {
		if sc, ok := conn.(syscall.Conn); ok {
			raw, err := sc.SyscallConn()
			if err != nil {
				return nil
			}
			return raw
		}
		inner, ok := conn.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		conn = inner.NetConn()
	}
	return nil
}

// connKey is the request context key of the client's connection.
type connKey struct{}

// withConn keeps the connection in its context, for clientPresence; it is
// registered with the server's RegisterConnContext.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// requestConn returns the client's connection of a request, or nil.
func requestConn(ctx context.Context) net.Conn {
	c, _ := ctx.Value(connKey{}).(net.Conn)
	return c
}
