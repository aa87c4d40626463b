package caddyprogress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
//
// A reconnect (the request carries Last-Event-ID, as EventSource sends
// after the stream ended) to an upload that has ended, or to an unknown
// ID, gets 204 No Content, which makes EventSource stop reconnecting; the
// first request still gets the final event.
//
// A tracker serves at most max_subscribers streams, and at most
// max_subscribers_per_upload follow one upload; past either, 503 with
// Retry-After. A subscriber that does not take an event within
// eventWriteTimeout (10s) is dropped, so it never holds up the upload
// or the other subscribers.
// GET <events_path>?group=<id> streams a group's (groupevents.go).
func (h *Handler) serveEvents(w http.ResponseWriter, r *http.Request, id string) error {
	if hidden, err := h.hideWithoutToken(w, r, uploadToken, id); hidden {
		return err
	}
	if id == "" && r.URL.Query().Has(groupQuery) {
		return h.serveGroupEvents(w, r, r.URL.Query().Get(groupQuery))
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		return h.writeError(w, r, http.StatusMethodNotAllowed,
			fmt.Errorf("method %s not allowed here: GET %s<id> streams events", r.Method, h.EventsPath))
	}
	if err := validateID(id); err != nil {
		return h.writeError(w, r, http.StatusBadRequest, err)
	}
	if isReconnect(r) {
		if h.lookupShared(r.Context(), id, h.tracker.lookup(id)).ended() {
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
	}
	release, err := h.subscribe(w, r, id, false)
	if release == nil {
		return err
	}
	defer release()

	s, err := h.openEventStream(w, r)
	defer s.close()
	if err != nil {
		return nil // the client is gone; nothing to tell it
	}

	h.followUpload(s, id)
	return nil
}

// followUpload sends the upload's events to s until the final one, or
// until s ends: "pending" first if it has not started, then its
// progress, then its final state.
func (h *Handler) followUpload(s eventSink, id string) {
	rec, started, stopWaiting := h.tracker.watch(id)
	if !rec.found() && h.sharedOn() && h.streamShared(s, id, started) { // on another instance (sharedevents.go)
		stopWaiting()
		return
	}
	if !rec.found() {
		rec = h.awaitStart(s, id, started)
		stopWaiting()
	}
	switch {
	case rec.final != nil: // it has ended
		_ = s.docEvent(rec.final.summary.state.String(), rec.final)
	case rec.live != nil:
		h.streamUpload(s, rec.live)
	}
}

// awaitStart sends "event: pending" and waits up to wait for the upload
// to start. It returns no record if the stream ended first.
func (h *Handler) awaitStart(s eventSink, id string, started <-chan struct{}) record {
	if s.event("pending", shortStatus{ID: id, Status: statePending.String()}) != nil {
		return record{}
	}
	timeout := time.NewTimer(time.Duration(h.Wait))
	defer timeout.Stop()
	for {
		select {
		case <-started:
			return h.tracker.lookup(id) // none if started and already gone
		case <-timeout.C:
			_ = s.event("error", shortStatus{ID: id, Status: "unknown"})
			return record{}
		case <-s.keepAlive():
			if s.ping() != nil {
				return record{}
			}
		case <-s.done():
			return record{}
		}
	}
}

// lastEventIDKey is the header EventSource sends when it reconnects.
var lastEventIDKey = http.CanonicalHeaderKey("Last-Event-ID")

// isReconnect reports whether r is an EventSource reconnecting.
func isReconnect(r *http.Request) bool {
	_, ok := r.Header[lastEventIDKey]
	return ok
}

// errStreamEnded means the final event was sent: the stream is over.
var errStreamEnded = errors.New("the final event was sent")

// streamUpload sends u's progress until it ends or the stream does.
func (h *Handler) streamUpload(s eventSink, u *upload) {
	interval := time.NewTicker(time.Duration(h.Interval))
	defer interval.Stop()

	sub := newSubscriber(s, u)
	if u.currentState().Final() {
		sub.final()
		return
	}
	if sub.progress() != nil {
		return
	}
	for {
		select {
		case <-u.done:
			sub.final()
			return
		case <-interval.C:
			if sub.progress() != nil {
				return
			}
		case <-s.keepAlive():
			if s.ping() != nil {
				return
			}
		case <-s.done():
			return
		}
	}
}

// subscriber is one event stream following one upload.
type subscriber struct {
	s            eventSink
	u            *upload
	lastState    state
	lastReceived int64
	lastObserved int64 // the multipart parts change after received does
	sentFinal    bool
}

func newSubscriber(s eventSink, u *upload) *subscriber {
	return &subscriber{s: s, u: u, lastState: statePending, lastReceived: -1}
}

// progress sends a progress event if anything changed since the last.
// Progress events never carry a final state: once the upload has ended,
// it sends the named final event instead, and errStreamEnded.
func (sub *subscriber) progress() error {
	st, received, observed := sub.u.currentState(), sub.u.received.Load(), sub.u.observedBytes()
	if st.Final() {
		sub.final()
		return errStreamEnded
	}
	if st == sub.lastState && received == sub.lastReceived && observed == sub.lastObserved {
		return nil
	}
	sub.lastState, sub.lastReceived, sub.lastObserved = st, received, observed
	d := sub.u.doc(time.Now())
	if d == nil { // max_memory has no room to encode it now: the next interval tries again
		sub.lastReceived = -1
		return nil
	}
	if d.summary.state.Final() { // it ended after st was read
		sub.final()
		return errStreamEnded
	}
	return sub.s.docEvent("", d)
}

// final sends the final event, once.
func (sub *subscriber) final() {
	if sub.sentFinal {
		return
	}
	sub.sentFinal = true
	d := sub.u.finalDoc.Load()
	_ = sub.s.docEvent(d.summary.state.String(), d)
}

// openEventStream writes the headers of an event stream and its retry
// line. The stream's done closes when the client goes away or the
// handler stops (Caddy stops or reloads); close releases it, also after
// an error.
func (h *Handler) openEventStream(w http.ResponseWriter, r *http.Request) (*eventStream, error) {
	h.metrics.subscribers.Inc()
	ctx, cancel := context.WithCancel(r.Context())
	stopWatching := context.AfterFunc(h.stopCtx, cancel)
	s := &eventStream{
		w:              w,
		rc:             http.NewResponseController(w),
		writeTimeout:   h.writeTimeout,
		stop:           ctx.Done(),
		keepAliveTimer: time.NewTicker(h.keepAliveEvery),
		release: func() {
			stopWatching()
			cancel()
			h.metrics.subscribers.Dec()
		},
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
