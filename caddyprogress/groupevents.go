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
// until s ends: "pending" first if no member has started, and "error"
// with {"status": "unknown"} if none does within wait (looking once
// per interval); then its progress, looking at it once per interval,
// until every member has ended and no new one has started for one
// interval.
func (h *Handler) followGroup(s eventSink, id string) {
	var g *groupSubscriber // once a member started
	defer func() {
		if g != nil {
			g.f.close()
		}
	}()
	// look reports whether the stream is over.
	look := func() bool {
		if g == nil {
			if !h.uploads.hasGroup(id) {
				return false
			}
			g = &groupSubscriber{s: s, id: id, f: h.uploads.followGroup(id)} // with redis, the members on other instances too
		}
		return g.look()
	}

	interval := time.NewTicker(time.Duration(h.Interval))
	defer interval.Stop()
	if look() {
		return
	}
	var timeout <-chan time.Time
	if g == nil {
		if s.event("pending", shortGroupStatus{Group: id, Status: statePending.String()}) != nil {
			return
		}
		timer := time.NewTimer(time.Duration(h.Wait))
		defer timer.Stop()
		timeout = timer.C
	}
	for {
		select {
		case <-interval.C:
			if look() {
				return
			}
			if g != nil {
				timeout = nil
			}
		case <-timeout:
			_ = s.event("error", shortGroupStatus{Group: id, Status: "unknown"})
			return
		case <-s.keepAlive():
			if s.ping() != nil {
				return
			}
		case <-s.done():
			return
		}
	}
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

// groupSubscriber is one event stream following a group whose first
// member has started.
type groupSubscriber struct {
	s  eventSink
	id string
	f  groupFollow

	last         *groupDoc     // the group as last seen
	lastSent     groupProgress // the group as its last progress event showed it
	settling     bool          // every member had ended when last seen
	settlingJoin uint64        // the newest member's join count then
}

// look looks at the group once and sends what changed; it reports
// whether the stream is over. The final event comes once every member
// has ended and no new one has joined for one look.
func (g *groupSubscriber) look() bool {
	members, lastJoin := g.f.members(time.Now())
	if len(members) == 0 {
		// every member's record is gone: end with what was last seen
		if g.last != nil && g.last.final() {
			_ = g.s.groupEvent(g.last.head.Status, g.last)
		} else {
			_ = g.s.event("error", shortGroupStatus{Group: g.id, Status: "unknown"})
		}
		return true
	}
	doc := lookAtGroup(g.id, members)
	g.last = doc
	if doc.final() {
		if g.settling && lastJoin == g.settlingJoin {
			_ = g.s.groupEvent(doc.head.Status, doc)
			return true
		}
		g.settling, g.settlingJoin = true, lastJoin
		return false
	}
	g.settling = false
	progress := progressOf(doc)
	if progress == g.lastSent {
		return false
	}
	g.lastSent = progress
	return g.s.groupEvent("", doc) != nil
}
