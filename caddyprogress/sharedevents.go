package caddyprogress

import (
	"context"
	"time"
)

// Event streams of uploads and groups on other instances, with redis:
// the stream subscribes to the shared store's pub/sub first (one
// connection per tracker and instance, whatever the number of
// streams), watches the upload (its instance publishes its progress
// while someone watches; renewed while the stream lasts), then looks
// it up, and drops documents it already has by their sequence number.
// The events are the same as for a local upload (events.go): progress
// at most once per interval (the uploading instance publishes no more
// often), one final event.

// streamShared serves the event stream of id, which has no record on
// this instance, from the shared store. It reports false, having sent
// nothing, when the store cannot be used: the caller then waits for a
// local upload as without redis.
func (h *Handler) streamShared(s eventSink, id string, started <-chan struct{}) bool {
	ctx := context.Background()
	sub, err := h.shared.c.subscribe(ctx, id, false)
	if err != nil {
		return false
	}
	defer sub.close()
	// watched while the stream lasts, so that its instance (or the one
	// that claims it, if it has not started) publishes its progress
	_ = h.shared.c.watch(ctx, id)
	rewatch := time.NewTicker(h.shared.c.watchEvery())
	defer rewatch.Stop()

	var lastSeq int64
	sentAny := false
	// send sends a document; it reports whether the stream is over.
	send := func(d sharedDoc) bool {
		doc, _, err := docFromJSON(d.json)
		if err != nil {
			return false
		}
		lastSeq, sentAny = d.seq, true
		if d.state.Final() {
			_ = s.docEvent(d.state.String(), doc)
			return true
		}
		return s.docEvent("", doc) != nil
	}

	if d, err := h.shared.c.lookup(ctx, id); err == nil && d.state != statePending {
		if send(d) {
			return true
		}
	}
	var timeout <-chan time.Time
	if !sentAny {
		if s.event("pending", shortStatus{ID: id, Status: statePending.String()}) != nil {
			return true
		}
		timer := time.NewTimer(time.Duration(h.Wait))
		defer timer.Stop()
		timeout = timer.C
	}
	for {
		select {
		case <-sub.notify():
			var latest *sharedDoc
			docs := sub.take()
			for i := range docs {
				d := &docs[i]
				if d.seq <= lastSeq || d.state == statePending {
					continue
				}
				if d.state.Final() {
					send(*d)
					return true
				}
				latest = d
			}
			if latest != nil {
				if send(*latest) {
					return true
				}
				timeout, started = nil, nil
			}
		case <-started: // it started here after all
			started = nil
			switch rec := h.tracker.lookup(id); {
			case rec.live != nil:
				h.streamUpload(s, rec.live)
				return true
			case rec.final != nil:
				_ = s.docEvent(rec.final.summary.state.String(), rec.final)
				return true
			}
		case <-timeout:
			_ = s.event("error", shortStatus{ID: id, Status: "unknown"})
			return true
		case <-rewatch.C:
			_ = h.shared.c.watch(ctx, id)
			// a final document published while the watch had lapsed
			// (Redis did not answer it) went to nobody: read it
			if d, err := h.shared.c.lookup(ctx, id); err == nil && d.state.Final() && d.seq > lastSeq {
				send(d)
				return true
			}
		case <-s.keepAlive():
			if s.ping() != nil {
				return true
			}
		case <-s.done():
			return true
		}
	}
}

// groupFollow is what a group stream reads its members from: the local
// tracker and, with redis, the documents of members on other
// instances, kept up to date through pub/sub.
type groupFollow struct {
	h      *Handler
	id     string
	sub    sharedSubscription   // nil without redis, or when it could not subscribe
	remote map[string]sharedDoc // by member ID; nil: look up at each look
}

// groupMembersFrom starts following the group's members.
func (h *Handler) groupMembersFrom(id string) *groupFollow {
	f := &groupFollow{h: h, id: id}
	if !h.sharedOn() {
		return f
	}
	ctx := context.Background()
	sub, err := h.shared.c.subscribe(ctx, id, true)
	if err != nil {
		return f // looked up at each look instead
	}
	f.sub = sub
	f.remote = make(map[string]sharedDoc)
	if docs, err := h.shared.c.lookupGroup(ctx, id); err == nil {
		for _, d := range docs {
			f.remote[d.id] = d
		}
	}
	return f
}

// members returns the group's members as tracker.groupMembers does.
func (f *groupFollow) members(now time.Time) ([]*statusDoc, uint64) {
	if f.sub != nil {
		for _, d := range f.sub.take() {
			if old, ok := f.remote[d.id]; !ok || d.seq > old.seq {
				f.remote[d.id] = d
			}
		}
	}
	return f.h.groupMembersShared(context.Background(), f.id, now, f.remote)
}

func (f *groupFollow) close() {
	if f.sub != nil {
		f.sub.close()
	}
}

// hasGroupShared reports whether the group has a member here or, with
// redis, on another instance: one lookup, so a group stream waiting for
// its first member costs a round trip per interval until one starts.
func (h *Handler) hasGroupShared(id string) bool {
	if h.tracker.hasGroup(id) {
		return true
	}
	if !h.sharedOn() {
		return false
	}
	docs, err := h.shared.c.lookupGroup(context.Background(), id)
	return err == nil && len(docs) > 0
}

// groupEndedElsewhere reports whether every member of the group on
// other instances has ended (true without redis, or when unknown).
func (h *Handler) groupEndedElsewhere(id string) bool {
	if !h.sharedOn() {
		return true
	}
	docs, err := h.shared.c.lookupGroup(context.Background(), id)
	if err != nil {
		return true
	}
	for _, d := range docs {
		if !d.state.Final() {
			return false
		}
	}
	return true
}
