package caddyprogress

import (
	"context"
	"time"
)

// eventSink is where the event loop (runStream, follow.go) and its
// followers send the events of an upload or a group: a Server-Sent
// Events stream (events.go) or a WebSocket (websocket.go). The loop
// decides what to send and when; a sink only frames it for its
// transport.
type eventSink interface {
	// docEvent sends an upload's document as the event name: "" for
	// progress, or the final state's name.
	docEvent(name string, d *statusDoc) error
	// groupEvent sends a group's document as the event name, likewise.
	groupEvent(name string, g *groupDoc) error
	// event sends a small value as JSON, as the event name: "pending",
	// or "error" with {"status": "unknown"}.
	event(name string, data any) error
	// ping keeps an idle stream open.
	ping() error
	// done is closed when the stream must end: the client went away, or
	// Caddy stops or reloads.
	done() <-chan struct{}
	// keepAlive ticks when an idle stream is due a ping.
	keepAlive() <-chan time.Time
	// close releases the stream; the handler calls it once, last.
	close()
}

// openStream counts a new stream (the subscribers metric) and returns
// its context: done when parent is, or when the handler stops (Caddy
// stops or reloads). release undoes both, once the stream is over.
func (h *Handler) openStream(parent context.Context) (ctx context.Context, release func()) {
	h.metrics.subscribers.Inc()
	ctx, cancel := context.WithCancel(parent)
	stopWatching := context.AfterFunc(h.stopCtx, cancel)
	return ctx, func() {
		stopWatching()
		cancel()
		h.metrics.subscribers.Dec()
	}
}
