package caddyprogress

import "time"

// A group's event stream (GET <events_path>?group=<id>, events.go, or
// <ws_path>?group=<id>, websocket.go) is one upload's, with a
// GroupStatus as data:
//
//	retry: 1000
//
//	event: pending                  (only if no member has started yet)
//	data: {"group": "...", "status": "pending"}
//
//	id: <received>                  (progress: the first at once, then at most
//	data: <GroupStatus JSON>         one per interval, only when something changed)
//
//	event: complete | error | aborted
//	id: <received>
//	data: <GroupStatus JSON>
//
// The final event comes once every member has ended and no new member
// has started for one interval; it ends the stream. A group with no
// member within wait gets "event: error" with {"status": "unknown"}.
// A reconnect (Last-Event-ID) to a group whose members have all ended,
// or that has none, gets 204 No Content, as for one upload. Group
// streams count toward max_subscribers, and at most
// max_subscribers_per_upload follow one group.

// followGroup sends the group's events to s until the final one, or
// until s ends: "pending" first if no member has started, then its
// progress, then its final state.
func (h *Handler) followGroup(s eventSink, id string) {
	if !h.uploads.hasGroup(id) {
		if !h.awaitGroup(s, id) {
			return
		}
	}
	h.streamGroup(s, id)
}

// groupEvent sends the group's document as an event named name ("" for
// progress), its id the group's received bytes.
func (s *eventStream) groupEvent(name string, g *groupDoc) error {
	if err := s.startEvent(name, g.head.Received); err != nil {
		return err
	}
	if err := g.writeTo(s.w); err != nil {
		return err
	}
	return s.endEvent()
}

// awaitGroup sends "event: pending" and waits up to wait for a member of
// the group to start, looking once per interval. It reports whether one
// did before the stream ended.
func (h *Handler) awaitGroup(s eventSink, id string) bool {
	if s.event("pending", shortGroupStatus{Group: id, Status: statePending.String()}) != nil {
		return false
	}
	interval := time.NewTicker(time.Duration(h.Interval))
	defer interval.Stop()
	timeout := time.NewTimer(time.Duration(h.Wait))
	defer timeout.Stop()
	for {
		select {
		case <-interval.C:
			if h.uploads.hasGroup(id) {
				return true
			}
		case <-timeout.C:
			_ = s.event("error", shortGroupStatus{Group: id, Status: "unknown"})
			return false
		case <-s.keepAlive():
			if s.ping() != nil {
				return false
			}
		case <-s.done():
			return false
		}
	}
}

// groupProgress is what a group stream compares to tell whether the
// group changed since its last event.
type groupProgress struct {
	status   string
	received int64
	members  int
	ended    int // members in processing or a final state
}

func progressOf(g *groupDoc) groupProgress {
	return groupProgress{status: g.head.Status, received: g.head.Received, members: len(g.members), ended: g.ended}
}

// streamGroup sends the group's progress, looking at it once per
// interval, until every member has ended and no new one has started for
// one interval, or until the stream ends.
func (h *Handler) streamGroup(s eventSink, id string) {
	interval := time.NewTicker(time.Duration(h.Interval))
	defer interval.Stop()
	group := h.uploads.followGroup(id) // with redis, the members on other instances too
	defer group.close()

	var last *groupDoc         // the group as last seen
	var lastSent groupProgress // the group as its last progress event showed it
	settling := false          // every member had ended when last seen
	var settlingJoin uint64    // the newest member's join count then

	// look looks at the group once, and reports whether the stream is over.
	look := func() bool {
		members, lastJoin := group.members(time.Now())
		if len(members) == 0 {
			// every member's record is gone: end with what was last seen
			if last != nil && last.final() {
				_ = s.groupEvent(last.head.Status, last)
			} else {
				_ = s.event("error", shortGroupStatus{Group: id, Status: "unknown"})
			}
			return true
		}
		g := lookAtGroup(id, members)
		last = g
		if g.final() {
			if settling && lastJoin == settlingJoin {
				_ = s.groupEvent(g.head.Status, g)
				return true
			}
			settling, settlingJoin = true, lastJoin
			return false
		}
		settling = false
		progress := progressOf(g)
		if progress == lastSent {
			return false
		}
		lastSent = progress
		return s.groupEvent("", g) != nil
	}

	if look() {
		return
	}
	for {
		select {
		case <-interval.C:
			if look() {
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
