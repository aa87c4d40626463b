package caddyprogress

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// keepAliveEvery is how often an idle event stream gets a comment line,
// and an idle WebSocket a ping; read once in Provision (tests shorten it).
var keepAliveEvery = 15 * time.Second

// serveEvents streams an upload's progress as Server-Sent Events:
//
//	retry: 1000
//
//	id: <received>
//	data: <Status JSON>
//
//	event: complete | error | aborted
//	id: <received>
//	data: <Status JSON>
//
// Progress events have no event name, so EventSource.onmessage gets
// them; the first is sent at once, then at most one per interval, and
// only when something changed. The final event ends the stream. An ID
// that has not started gets "event: pending" first, and "event: error"
// with {"status": "unknown"} if nothing starts within wait.
// GET <events_path>?group=<id> streams a group's, with a GroupStatus as
// data (groupevents.go).
//
// A reconnect (the request carries Last-Event-ID, as EventSource sends
// after the stream ended) to an upload that has ended, or to an unknown
// ID, gets 204 No Content, which makes EventSource stop reconnecting; the
// first request still gets the final event.
//
// A tracker serves at most max_subscribers streams, and at most
// max_subscribers_per_upload follow one upload (or one group); past
// either, 503 with Retry-After. A subscriber that does not take an event
// within eventWriteTimeout (10s) is dropped, so it never holds up the
// upload or the other subscribers.
func (h *Handler) serveEvents(w http.ResponseWriter, r *http.Request, id string) error {
	q := progressReadOf(r, id)
	q.methods = []string{http.MethodGet}
	q.usage = fmt.Sprintf("GET %s<id> streams events", h.EventsPath)
	if q.group {
		q.usage = fmt.Sprintf("GET %s?%s=<id> streams a group's events", h.EventsPath, groupQuery)
	}
	if ok, err := h.admit(w, r, q); !ok {
		return err
	}
	release, err := h.admitStream(w, r, q, true)
	if release == nil {
		return err
	}
	defer release()

	s, err := h.openEventStream(w, r)
	defer s.close()
	if err != nil {
		return nil // the client is gone; nothing to tell it
	}
	h.follow(s, q)
	return nil
}

// openEventStream writes the headers of an event stream and its retry
// line. The stream's done closes when the client goes away or the
// handler stops (Caddy stops or reloads); close releases it, also after
// an error.
func (h *Handler) openEventStream(w http.ResponseWriter, r *http.Request) (*eventStream, error) {
	ctx, release := h.openStream(r.Context())
	s := &eventStream{
		w:              w,
		rc:             http.NewResponseController(w),
		writeTimeout:   h.writeTimeout,
		stop:           ctx.Done(),
		keepAliveTimer: time.NewTicker(h.keepAliveEvery),
		release:        release,
	}
	header := w.Header()
	header.Set("Content-Type", "text/event-stream")
	header.Set("Cache-Control", "no-store")
	header.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return s, s.send([]byte("retry: 1000\n\n"))
}

// eventStream writes Server-Sent Events, flushing each one.
type eventStream struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	buf bytes.Buffer

	// writeTimeout bounds each write; 0 for none. A write past it fails
	// and ends the stream.
	writeTimeout time.Duration

	stop           <-chan struct{} // closed when the stream must end
	keepAliveTimer *time.Ticker    // when an idle stream is due a comment line
	release        func()
}

func (s *eventStream) done() <-chan struct{}       { return s.stop }
func (s *eventStream) keepAlive() <-chan time.Time { return s.keepAliveTimer.C }

// close releases the stream's ticker and its watch on the handler, and
// lifts the write deadline from the connection.
func (s *eventStream) close() {
	s.keepAliveTimer.Stop()
	if s.writeTimeout > 0 {
		_ = s.rc.SetWriteDeadline(time.Time{})
	}
	s.release()
}

// event sends one event without an id; its name is left out when empty.
func (s *eventStream) event(name string, data any) error {
	s.buf.Reset()
	if name != "" {
		s.buf.WriteString("event: " + name + "\n")
	}
	s.buf.WriteString("data: ")
	if err := json.NewEncoder(&s.buf).Encode(data); err != nil { // ends with \n
		return err
	}
	s.buf.WriteString("\n")
	return s.send(s.buf.Bytes())
}

// docEvent sends an upload's document as an event named name ("" for
// progress), its id the received bytes.
func (s *eventStream) docEvent(name string, d *statusDoc) error {
	if err := s.startEvent(name, d.summary.received); err != nil {
		return err
	}
	if err := d.writeTo(s.w, true); err != nil {
		return err
	}
	return s.endEvent()
}

// startEvent writes an event's name (left out when empty), its id and
// the start of its data line; the data follows straight to the stream,
// so a large document is never copied whole.
func (s *eventStream) startEvent(name string, id int64) error {
	s.buf.Reset()
	if name != "" {
		s.buf.WriteString("event: ")
		s.buf.WriteString(name)
		s.buf.WriteByte('\n')
	}
	s.buf.WriteString("id: ")
	s.buf.Write(strconv.AppendInt(s.buf.AvailableBuffer(), id, 10))
	s.buf.WriteString("\ndata: ")
	s.setWriteDeadline()
	_, err := s.w.Write(s.buf.Bytes())
	return err
}

// endEvent ends the event's data and flushes it.
func (s *eventStream) endEvent() error {
	if _, err := io.WriteString(s.w, "\n\n"); err != nil {
		return err
	}
	return s.rc.Flush()
}

// ping sends the comment line that keeps an idle stream open.
func (s *eventStream) ping() error {
	return s.send([]byte(": keep-alive\n\n"))
}

// setWriteDeadline bounds the next write; where a writer cannot set
// deadlines, its writes go unbounded.
func (s *eventStream) setWriteDeadline() {
	if s.writeTimeout > 0 {
		_ = s.rc.SetWriteDeadline(time.Now().Add(s.writeTimeout))
	}
}

func (s *eventStream) send(p []byte) error {
	s.setWriteDeadline()
	if _, err := s.w.Write(p); err != nil {
		return err
	}
	return s.rc.Flush()
}

// Interface guard
var _ eventSink = (*eventStream)(nil)
