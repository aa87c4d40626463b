package caddyprogress

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http/httpguts"
)

// serveWebSocket follows an upload's progress over a WebSocket: the same
// documents as the events route (events.go), one JSON text message each,
//
//	{"event":"pending","data":{"id":"...","status":"pending"}}       (only if it has not started)
//	{"event":"progress","data":<Status JSON>}                         (the first at once, then at most
//	                                                                   one per interval, only when something changed)
//	{"event":"complete"|"error"|"aborted","data":<Status JSON>}
//
// then a normal closure (1000). An ID with nothing started within wait
// gets {"event":"error","data":{"id":"...","status":"unknown"}}, then the
// normal closure. GET <ws_path>?group=<id> follows a group, with a
// GroupStatus as data (groupevents.go).
//
// Everything is checked before the upgrade, and refused with a status
// code and a JSON error, as on the events route: the token of
// status_access token (404 as for an unknown ID), the method (405), the
// ID (400), a request that is not a WebSocket upgrade (426), the Origin
// (403: only the request's own host, or one matching ws_origins), and
// the subscriber caps (503 with Retry-After). A WebSocket counts toward
// max_subscribers and max_subscribers_per_upload like an event stream.
//
// The server only sends: a message from the client closes the socket
// (1008). Pings go every 15s to an idle socket; a client that does not
// take a message, or answer a ping, within 10s is dropped. When Caddy
// stops or reloads, open sockets close with 1001 (going away).
func (h *Handler) serveWebSocket(w http.ResponseWriter, r *http.Request, id string) error {
	q := progressReadOf(r, id)
	what := "an upload"
	if q.group {
		what = "a group"
	}
	q.methods = []string{http.MethodGet}
	q.usage = fmt.Sprintf("a WebSocket upgrade (GET %s<id>, over HTTP/1.1) follows %s", h.WSPath, what)
	if ok, err := h.admit(w, r, q); !ok {
		return err
	}
	if !httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "websocket") {
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		return h.writeError(w, r, http.StatusUpgradeRequired,
			fmt.Errorf("this route is a WebSocket: send a WebSocket upgrade request, or use %s for Server-Sent Events", h.EventsPath))
	}
	if origin := r.Header.Get("Origin"); !originAllowed(origin, r.Host, h.WSOrigins) {
		return h.writeError(w, r, http.StatusForbidden,
			fmt.Errorf("origin %q may not open a WebSocket here: only pages of this host, or of an origin in ws_origins", origin))
	}
	release, err := h.admitStream(w, r, q, false)
	if release == nil {
		return err
	}
	defer release()

	// Accept checks the rest of the handshake (version, key), answering a
	// bad one itself in plain text.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: h.WSOrigins})
	if err != nil {
		h.logRefusal(r, http.StatusBadRequest, fmt.Errorf("accepting a WebSocket: %w", err))
		return nil
	}
	s := h.openWebSocket(c)
	defer s.close()
	h.follow(s, q)
	return nil
}

// originAllowed reports whether a page of origin may open a WebSocket on
// host: with no Origin (not a browser), from the same host, or from an
// origin matching one of patterns. This is the check coder/websocket's
// Accept makes, made first so that a refusal gets a JSON error.
// A pattern is matched with path.Match, ignoring case, against the
// origin's host, or against "scheme://host" if it has "://".
func originAllowed(origin, host string, patterns []string) bool {
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, host) {
		return true
	}
	for _, pattern := range patterns {
		target := u.Host
		if strings.Contains(pattern, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(pattern), strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}

// validateOrigins refuses ws_origins patterns that path.Match cannot
// read, and "*", which would let any page open progress sockets.
func (h *Handler) validateOrigins() error {
	for _, pattern := range h.WSOrigins {
		if pattern == "*" {
			return fmt.Errorf("ws_origins *: would let a page of any site follow uploads; name the origins")
		}
		if _, err := path.Match(pattern, ""); err != nil {
			return fmt.Errorf("ws_origins %q is not a valid pattern: %w", pattern, err)
		}
	}
	return nil
}

// maxKeptMessageBuffer is the largest message buffer a socket keeps
// between messages; a larger one (an upload with many files) is let go.
const maxKeptMessageBuffer = 16 << 10

// webSocketStream sends events as WebSocket text messages; it is the
// WebSocket eventSink.
type webSocketStream struct {
	c   *websocket.Conn
	buf bytes.Buffer // the message being made

	// writeTimeout bounds each write and ping; 0 for none. Past it, the
	// connection is closed and the stream ends.
	writeTimeout time.Duration
	// writeTimer closes the connection when a write takes longer than
	// writeTimeout: one timer, reset for each write, instead of a
	// context each (which coder/websocket would watch with more).
	writeTimer *time.Timer

	clientGone     context.Context // done when the client closed, sent, or the connection failed
	clientSent     atomic.Bool     // the client sent a data message
	readerDone     chan struct{}   // closed when the socket's reader has ended
	stopping       context.Context // done when Caddy stops or reloads
	stop           <-chan struct{} // closed when the stream must end
	keepAliveTimer *time.Ticker    // when an idle socket is due a ping
	failed         bool            // a write or ping failed: no closing handshake
	release        func()
}

// openWebSocket makes the stream of an accepted socket and starts its
// reader, which answers pings and takes the pongs and the close frame
// (coder/websocket handles control frames while a read runs).
func (h *Handler) openWebSocket(c *websocket.Conn) *webSocketStream {
	clientGone, gone := context.WithCancel(context.Background())
	ctx, release := h.openStream(clientGone)
	writeTimer := time.AfterFunc(time.Hour, func() { _ = c.CloseNow() })
	writeTimer.Stop()
	s := &webSocketStream{
		c:              c,
		writeTimeout:   h.writeTimeout,
		writeTimer:     writeTimer,
		clientGone:     clientGone,
		readerDone:     make(chan struct{}),
		stopping:       h.stopCtx,
		stop:           ctx.Done(),
		keepAliveTimer: time.NewTicker(h.keepAliveEvery),
		release:        release,
	}
	go s.read(gone)
	return s
}

// read runs until the client closes the socket, the connection fails,
// or the client sends a data message, which the stream then closes with
// 1008 (the server only sends). coder/websocket's CloseRead would do
// the same, but its close from within the reader waits 15s for itself.
func (s *webSocketStream) read(gone context.CancelFunc) {
	defer close(s.readerDone)
	defer gone()
	if _, _, err := s.c.Read(context.Background()); err == nil {
		s.clientSent.Store(true)
	}
}

func (s *webSocketStream) done() <-chan struct{}       { return s.stop }
func (s *webSocketStream) keepAlive() <-chan time.Time { return s.keepAliveTimer.C }

// close ends the socket: with a normal closure (1000) after the final
// message, with 1001 (going away) when Caddy stops or reloads, with
// 1008 after a message from the client, and without a closing
// handshake when the client is gone or stopped answering. It returns
// once the socket's reader has ended.
func (s *webSocketStream) close() {
	s.keepAliveTimer.Stop()
	s.writeTimer.Stop()
	switch {
	case s.failed:
		_ = s.c.CloseNow()
	case s.clientSent.Load():
		_ = s.c.Close(websocket.StatusPolicyViolation, "the server only sends")
	case s.clientGone.Err() != nil:
		_ = s.c.CloseNow()
	case s.stopping.Err() != nil:
		_ = s.c.Close(websocket.StatusGoingAway, "server stopping")
	default:
		_ = s.c.Close(websocket.StatusNormalClosure, "")
	}
	<-s.readerDone // the connection is closed: the read has returned
	s.release()
}

// startMessage starts a message {"event":"<name>","data":...}; an empty
// name is "progress".
func (s *webSocketStream) startMessage(name string) {
	if name == "" {
		name = "progress"
	}
	s.buf.Reset()
	s.buf.WriteString(`{"event":"`)
	s.buf.WriteString(name)
	s.buf.WriteString(`","data":`)
}

// docEvent sends an upload's document, shared and already encoded, as
// the data of a message.
func (s *webSocketStream) docEvent(name string, d *statusDoc) error {
	s.startMessage(name)
	_ = d.writeTo(&s.buf, true) // a bytes.Buffer takes every write
	return s.send()
}

// groupEvent sends a group's document as the data of a message.
func (s *webSocketStream) groupEvent(name string, g *groupDoc) error {
	s.startMessage(name)
	if err := g.writeTo(&s.buf); err != nil {
		return err
	}
	return s.send()
}

// event sends data, encoded as JSON, as a message.
func (s *webSocketStream) event(name string, data any) error {
	encoded, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("encoding a %s message: %w", name, err)
	}
	s.startMessage(name)
	s.buf.Write(encoded)
	return s.send()
}

// send ends the message and writes it in one frame, within writeTimeout.
func (s *webSocketStream) send() error {
	s.buf.WriteByte('}')
	if s.writeTimeout > 0 {
		s.writeTimer.Reset(s.writeTimeout)
	}
	err := s.c.Write(context.Background(), websocket.MessageText, s.buf.Bytes())
	s.writeTimer.Stop()
	if s.buf.Cap() > maxKeptMessageBuffer {
		s.buf = bytes.Buffer{}
	}
	if err != nil {
		s.failed = true
	}
	return err
}

// ping sends a ping frame and waits for its pong, within writeTimeout.
func (s *webSocketStream) ping() error {
	ctx, cancel := s.deadline()
	defer cancel()
	err := s.c.Ping(ctx)
	if err != nil {
		s.failed = true
	}
	return err
}

// deadline is the context of one ping: done after writeTimeout, if set.
func (s *webSocketStream) deadline() (context.Context, context.CancelFunc) {
	if s.writeTimeout > 0 {
		return context.WithTimeout(context.Background(), s.writeTimeout)
	}
	return context.Background(), func() {}
}

// Interface guard
var _ eventSink = (*webSocketStream)(nil)
