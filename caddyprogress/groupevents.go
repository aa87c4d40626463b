package caddyprogress

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// serveGroupEvents streams a group's progress as Server-Sent Events, the
// same way as one upload's (events.go), with a GroupStatus as data:
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
func (h *Handler) serveGroupEvents(w http.ResponseWriter, r *http.Request, id string) error {
	if hidden, err := h.hideWithoutToken(w, r, groupToken, id); hidden {
		return err
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		return h.writeError(w, r, http.StatusMethodNotAllowed,
			fmt.Errorf("method %s not allowed here: GET %s?%s=<id> streams a group's events", r.Method, h.EventsPath, groupQuery))
	}
	if err := validateID(id); err != nil {
		return h.writeError(w, r, http.StatusBadRequest, fmt.Errorf("%s query parameter: not a valid group ID: %w", groupQuery, err))
	}

	s, err := h.openEventStream(w, r)
	defer s.close()
	if err != nil {
		return nil // the client is gone; nothing to tell it
	}

	if members, _ := h.tracker.groupMembers(id); len(members) == 0 {
		if !h.awaitGroup(s, id) {
			return nil
		}
	}
	h.streamGroup(s, id)
	return nil
}

// awaitGroup sends "event: pending" and waits up to wait for a member of
// the group to start, looking once per interval. It reports whether one
// did before the stream ended.
func (h *Handler) awaitGroup(s *eventStream, id string) bool {
	if s.event("pending", "", shortGroupStatus{Group: id, Status: statePending.String()}) != nil {
		return false
	}
	interval := time.NewTicker(time.Duration(h.Interval))
	defer interval.Stop()
	timeout := time.NewTimer(time.Duration(h.Wait))
	defer timeout.Stop()
	for {
		select {
		case <-interval.C:
			if members, _ := h.tracker.groupMembers(id); len(members) > 0 {
				return true
			}
		case <-timeout.C:
			_ = s.event("error", "", shortGroupStatus{Group: id, Status: "unknown"})
			return false
		case <-s.keepAlive.C:
			if s.ping() != nil {
				return false
			}
		case <-s.done:
			return false
		}
	}
}

// groupProgress is what a group stream compares to tell whether the
// group changed since its last event.
type groupProgress struct {
	status        string
	received      int64
	members       int
	ended         int // members in processing or a final state
	fileBytes     int64
	filesComplete int
}

func progressOf(g GroupStatus) groupProgress {
	p := groupProgress{status: g.Status, received: g.Received, members: len(g.Uploads)}
	for _, u := range g.Uploads {
		if u.Status != stateUploading.String() {
			p.ended++
		}
		for _, f := range u.Files {
			p.fileBytes += f.Received
			if f.Status == partComplete {
				p.filesComplete++
			}
		}
	}
	return p
}

// streamGroup sends the group's progress, looking at it once per
// interval, until every member has ended and no new one has started for
// one interval, or until the stream ends.
func (h *Handler) streamGroup(s *eventStream, id string) {
	interval := time.NewTicker(time.Duration(h.Interval))
	defer interval.Stop()

	var last GroupStatus       // the group as last seen
	var lastSent groupProgress // the group as its last progress event showed it
	settling := false          // every member had ended when last seen
	var settlingJoin uint64    // the newest member's join count then

	// look looks at the group once, and reports whether the stream is over.
	look := func() bool {
		members, lastJoin := h.tracker.groupMembers(id)
		if len(members) == 0 {
			// every member's record is gone: end with what was last seen
			if last.Group != "" && last.final() {
				_ = s.event(last.Status, strconv.FormatInt(last.Received, 10), last)
			} else {
				_ = s.event("error", "", shortGroupStatus{Group: id, Status: "unknown"})
			}
			return true
		}
		g := groupSnapshot(id, members, time.Now())
		last = g
		if g.final() {
			if settling && lastJoin == settlingJoin {
				_ = s.event(g.Status, strconv.FormatInt(g.Received, 10), g)
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
		return s.event("", strconv.FormatInt(g.Received, 10), g) != nil
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
		case <-s.keepAlive.C:
			if s.ping() != nil {
				return
			}
		case <-s.done:
			return
		}
	}
}
