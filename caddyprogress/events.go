package caddyprogress

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// keepAliveEvery is how often an idle event stream gets a comment line.
const keepAliveEvery = 15 * time.Second

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

	s, err := h.openEventStream(w, r)
	defer s.close()
	if err != nil {
		return nil // the client is gone; nothing to tell it
	}

	u, started, stopWaiting := h.tracker.watch(id)
	if u == nil {
		u = h.awaitStart(s, id, started)
		stopWaiting()
		if u == nil {
			return nil
		}
	}
	h.streamUpload(s, u)
	return nil
}

// awaitStart sends "event: pending" and waits up to wait for the upload
// to start. It returns nil if the stream ended first.
func (h *Handler) awaitStart(s *eventStream, id string, started <-chan struct{}) *upload {
	if s.event("pending", "", shortStatus{ID: id, Status: statePending.String()}) != nil {
		return nil
	}
	timeout := time.NewTimer(time.Duration(h.Wait))
	defer timeout.Stop()
	for {
		select {
		case <-started:
			if u := h.tracker.get(id); u != nil {
				return u
			}
			return nil // started and already gone
		case <-timeout.C:
			_ = s.event("error", "", shortStatus{ID: id, Status: "unknown"})
			return nil
		case <-s.keepAlive.C:
			if s.ping() != nil {
				return nil
			}
		case <-s.done:
			return nil
		}
	}
}

// streamUpload sends u's progress until it ends or the stream does.
func (h *Handler) streamUpload(s *eventStream, u *upload) {
	interval := time.NewTicker(time.Duration(h.Interval))
	defer interval.Stop()

	sub := newSubscriber(s, u)
	if u.currentState().final() {
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
		case <-s.keepAlive.C:
			if s.ping() != nil {
				return
			}
		case <-s.done:
			return
		}
	}
}

// subscriber is one event stream following one upload.
type subscriber struct {
	s            *eventStream
	u            *upload
	lastState    state
	lastReceived int64
	lastObserved int64 // the multipart parts change after received does
}

func newSubscriber(s *eventStream, u *upload) *subscriber {
	return &subscriber{s: s, u: u, lastState: statePending, lastReceived: -1}
}

// progress sends a progress event if anything changed since the last.
func (sub *subscriber) progress() error {
	st, received, observed := sub.u.currentState(), sub.u.received.Load(), sub.u.observedBytes()
	if st == sub.lastState && received == sub.lastReceived && observed == sub.lastObserved {
		return nil
	}
	sub.lastState, sub.lastReceived, sub.lastObserved = st, received, observed
	status := sub.u.snapshot(time.Now())
	return sub.s.event("", strconv.FormatInt(status.Received, 10), status)
}

// final sends the final event.
func (sub *subscriber) final() {
	status := sub.u.snapshot(time.Now())
	_ = sub.s.event(status.Status, strconv.FormatInt(status.Received, 10), status)
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
		w:         w,
		rc:        http.NewResponseController(w),
		done:      ctx.Done(),
		keepAlive: time.NewTicker(keepAliveEvery),
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

	done      <-chan struct{} // closed when the stream must end
	keepAlive *time.Ticker    // when an idle stream is due a comment line
	release   func()
}

// close releases the stream's ticker and its watch on the handler.
func (s *eventStream) close() {
	s.keepAlive.Stop()
	s.release()
}

// event sends one event; name and id are left out when empty.
func (s *eventStream) event(name, id string, data any) error {
	s.buf.Reset()
	if name != "" {
		s.buf.WriteString("event: " + name + "\n")
	}
	if id != "" {
		s.buf.WriteString("id: " + id + "\n")
	}
	s.buf.WriteString("data: ")
	if err := json.NewEncoder(&s.buf).Encode(data); err != nil { // ends with \n
		return err
	}
	s.buf.WriteString("\n")
	return s.send(s.buf.Bytes())
}

// ping sends the comment line that keeps an idle stream open.
func (s *eventStream) ping() error {
	return s.send([]byte(": keep-alive\n\n"))
}

func (s *eventStream) send(p []byte) error {
	if _, err := s.w.Write(p); err != nil {
		return err
	}
	return s.rc.Flush()
}
