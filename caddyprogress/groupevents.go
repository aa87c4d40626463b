package caddyprogress

import (
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"time"
)

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
	g := &groupSubscriber{s: s, id: id, src: h.uploads}
	defer g.close()
	h.runStream(s, g,
		shortGroupStatus{Group: id, Status: progress.StatePending.String()}, shortGroupStatus{Group: id, Status: "unknown"})
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

// groupSubscriber is one event stream following a group.
type groupSubscriber struct {
	s   eventSink
	id  string
	src uploadStore
	f   groupFollow // nil until a member started

	last         *groupDoc     // the group as last seen
	lastSent     groupProgress // the group as its last progress event showed it
	settling     bool          // every member had ended when last seen
	settlingJoin uint64        // the newest member's join count then
}

// step follows the group from the start of its first member (with
// redis, the members on other instances too), then looks at it.
func (g *groupSubscriber) step() bool {
	if g.f == nil {
		if !g.src.hasGroup(g.id) {
			return false
		}
		g.f = g.src.followGroup(g.id)
	}
	return g.look()
}

func (g *groupSubscriber) started() bool            { return g.f != nil }
func (g *groupSubscriber) changed() <-chan struct{} { return nil }

func (g *groupSubscriber) close() {
	if g.f != nil {
		g.f.close()
	}
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

// Interface guard
var _ follower = (*groupSubscriber)(nil)
