package caddyprogress

import "time"

// eventSink is where the event loops (followUpload and followGroup, with
// awaitStart, streamUpload, awaitGroup and streamGroup) send the events
// of an upload or a group: a Server-Sent Events stream (events.go) or a
// WebSocket (websocket.go). The loops decide what to send and when; a
// sink only frames it for its transport.
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
