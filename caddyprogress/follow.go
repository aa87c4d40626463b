package caddyprogress

import (
	"errors"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"time"
)

// One loop follows an upload for every event stream, Server-Sent Events
// or WebSocket (the eventSink, sink.go), wherever the upload runs: it
// reads the upload's documents from an uploadFollow (the handler's
// uploadStore gives it) at each interval, and whenever the follow says
// something changed.

// uploadFollow is one stream's view of one upload's documents.
type uploadFollow interface {
	// next returns the upload's document when it changed since the
	// last one next returned (nil if not, or if max_memory has no room
	// to encode it now), and where the upload is.
	next() (*statusDoc, followState)
	// changed is closed, or receives, when next may have something
	// before the next interval: the upload started or ended, or another
	// instance published. Called before each wait: it may change.
	changed() <-chan struct{}
	// close stops following.
	close()
}

// followState is where a followed upload is.
type followState int

const (
	awaitingStart followState = iota // unknown or only reserved, so far
	following                        // started: its documents come
	followLost                       // it started, and its record was gone before anything could be sent
)

// errStreamEnded means the final event was sent: the stream is over.
var errStreamEnded = errors.New("the final event was sent")

// followUpload sends the upload's events to s until the final one, or
// until s ends: "pending" first if it has not started, and "error" with
// {"status": "unknown"} if it does not within wait; then its progress,
// then its final state.
func (h *Handler) followUpload(s eventSink, id string) {
	f := h.uploads.follow(id)
	defer f.close()
	h.runStream(s, newSubscriber(s, f),
		shortStatus{ID: id, Status: progress.StatePending.String()}, shortStatus{ID: id, Status: "unknown"})
}

// follower is what the event loop drives: one stream's follow of an
// upload (subscriber) or of a group (groupSubscriber, groupevents.go).
type follower interface {
	// step sends what changed since the last step, and reports whether
	// the stream is over.
	step() bool
	// started reports whether the upload, or a member of the group, has
	// started.
	started() bool
	// changed is as uploadFollow's: nil when only the interval tells.
	changed() <-chan struct{}
}

// runStream is the one event loop, of every stream: upload or group,
// SSE or WebSocket, here or on another instance. It steps f at once,
// then at each interval and whenever f says something changed, until a
// step says the stream is over or s ends. While nothing has started, s
// gets "pending" (with pending as data) first, and "error" (unknown)
// if nothing starts within wait.
func (h *Handler) runStream(s eventSink, f follower, pending, unknown any) {
	interval := time.NewTicker(time.Duration(h.Interval))
	defer interval.Stop()
	if f.step() {
		return
	}
	var timeout <-chan time.Time
	if !f.started() {
		if s.event("pending", pending) != nil {
			return
		}
		timer := time.NewTimer(time.Duration(h.Wait))
		defer timer.Stop()
		timeout = timer.C
	}
	for {
		select {
		case <-f.changed():
		case <-interval.C:
		case <-timeout:
			_ = s.event("error", unknown)
			return
		case <-s.keepAlive():
			if s.ping() != nil {
				return
			}
			continue
		case <-s.done():
			return
		}
		if f.step() {
			return
		}
		if f.started() {
			timeout = nil
		}
	}
}

// subscriber is one event stream following one upload.
type subscriber struct {
	s          eventSink
	f          uploadFollow
	hasStarted bool // the upload has started: no more "pending"
	sentFinal  bool
}

func newSubscriber(s eventSink, f uploadFollow) *subscriber {
	return &subscriber{s: s, f: f}
}

func (sub *subscriber) step() bool               { return sub.progress() != nil }
func (sub *subscriber) started() bool            { return sub.hasStarted }
func (sub *subscriber) changed() <-chan struct{} { return sub.f.changed() }

// progress sends the upload's document if it changed since the last.
// Progress events never carry a final state: once the upload has ended,
// it sends the named final event instead, once, and errStreamEnded; a
// record lost before anything was sent ends the stream too.
func (sub *subscriber) progress() error {
	d, where := sub.f.next()
	switch {
	case where == followLost:
		return errStreamEnded
	case where == following:
		sub.hasStarted = true
	}
	switch {
	case d == nil:
		return nil
	case d.summary.state.Final():
		if !sub.sentFinal {
			sub.sentFinal = true
			_ = sub.s.docEvent(d.summary.state.String(), d)
		}
		return errStreamEnded
	}
	return sub.s.docEvent("", d)
}

// trackerFollow follows an upload of this instance's tracker: it waits
// for its start (a channel the tracker closes), then reads it at each
// interval (a body's Read never notifies anyone) and at its end.
type trackerFollow struct {
	wait *startWait // until it starts; nil once it has (or was lost)
	live *upload    // in flight, or ended since it was found
	doc  *statusDoc // the final document of one that had ended when found

	// what the last document sent showed of a live upload
	lastState    state
	lastReceived int64
	lastObserved int64 // the multipart parts change after received does
}

// startWait is a follow's wait for its upload to start.
type startWait struct {
	t       *tracker
	id      string
	started <-chan struct{} // closed when it starts
	stop    func()          // the tracker's awaitStart's
}

// follow follows the tracker's upload with the given ID.
func (t *tracker) follow(id string) *trackerFollow {
	rec, started, stop := t.awaitStart(id)
	f := followRecord(rec)
	if !rec.found() {
		f.wait = &startWait{t: t, id: id, started: started, stop: stop}
	}
	return f
}

// followRecord follows an upload already found, from its record.
func followRecord(rec record) *trackerFollow {
	return &trackerFollow{live: rec.live, doc: rec.doc, lastState: progress.StatePending, lastReceived: -1}
}

// waiting reports whether the upload has not started yet.
func (f *trackerFollow) waiting() bool { return f.wait != nil }

func (f *trackerFollow) next() (*statusDoc, followState) {
	if w := f.wait; w != nil {
		select {
		case <-w.started:
		default:
			return nil, awaitingStart
		}
		f.close()
		rec := w.t.lookup(w.id)
		f.live, f.doc = rec.live, rec.doc
	}
	u := f.live
	switch {
	case u == nil && f.doc == nil: // started and already gone
		return nil, followLost
	case u == nil: // it has ended
		return f.doc, following
	}
	st, received, observed := u.currentState(), u.received.Load(), u.observedBytes()
	if st.Final() {
		return u.finalDoc.Load(), following
	}
	if st == f.lastState && received == f.lastReceived && observed == f.lastObserved {
		return nil, following
	}
	f.lastState, f.lastReceived, f.lastObserved = st, received, observed
	d := u.doc(time.Now())
	if d == nil { // max_memory has no room to encode it now: the next interval tries again
		f.lastReceived = -1
	}
	return d, following // final if it ended after st was read
}

func (f *trackerFollow) changed() <-chan struct{} {
	switch {
	case f.wait != nil:
		return f.wait.started
	case f.live != nil:
		return f.live.done
	}
	return nil // an ended upload's document is all there is
}

func (f *trackerFollow) close() {
	if f.wait != nil {
		f.wait.stop()
		f.wait = nil
	}
}

// groupFollow is one stream's view of a group's members.
type groupFollow interface {
	// members returns the members' documents as they are at now, as
	// uploadStore.groupMembers does.
	members(now time.Time) ([]*statusDoc, uint64)
	close()
}

// Interface guards
var (
	_ uploadFollow = (*trackerFollow)(nil)
	_ follower     = (*subscriber)(nil)
)
