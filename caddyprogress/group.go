package caddyprogress

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"
)

// groupHeader is the request header that makes an upload a member of a
// group, for clients that send several files as parallel requests.
const groupHeader = "X-Upload-Group"

// groupKey is groupHeader in canonical form.
var groupKey = http.CanonicalHeaderKey(groupHeader)

// groupQuery is the query parameter of the status and events routes
// that names a group: GET <status_path>?group=<id>.
const groupQuery = "group"

// group is a set of uploads that report one aggregate progress. It lives
// as long as one of its members' records does.
type group struct {
	id       string
	members  map[*upload]struct{}
	lastJoin uint64 // the tracker's join count when the newest member joined
}

// groupSet is a tracker's groups, guarded by the tracker's lock.
type groupSet struct {
	byID  map[string]*group
	joins uint64 // members that ever joined any group, so streams can tell a new one did
}

// uploadGroup returns the group ID the request names in its
// X-Upload-Group header: "" when it has none, an error when the ID is
// not valid (the same rules as upload IDs).
func uploadGroup(r *http.Request) (string, error) {
	values, ok := r.Header[groupKey]
	if !ok {
		return "", nil
	}
	if err := validateID(values[0]); err != nil {
		return "", fmt.Errorf("%s header: not a valid group ID: %w", groupHeader, err)
	}
	return values[0], nil
}

// join makes u a member of the group with the given ID; "" is no group.
// A group that has limit members takes no more: u stays on its own, and
// join reports false.
func (t *tracker) join(id string, u *upload, limit int) bool {
	if id == "" {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.uploads[u.id] != u {
		return true // already replaced or removed
	}
	if t.groups.byID == nil {
		t.groups.byID = make(map[string]*group)
	}
	g := t.groups.byID[id]
	if g == nil {
		g = &group{id: id, members: make(map[*upload]struct{})}
		t.groups.byID[id] = g
	}
	if len(g.members) >= limit {
		return false
	}
	t.groups.joins++
	g.members[u] = struct{}{}
	g.lastJoin = t.groups.joins
	u.group = g
	return true
}

// leaveGroup takes u out of its group, and forgets the group once it has
// no member left. The caller holds t.mu.
func (t *tracker) leaveGroup(u *upload) {
	g := u.group
	if g == nil {
		return
	}
	u.group = nil
	delete(g.members, u)
	if len(g.members) == 0 && t.groups.byID[g.id] == g {
		delete(t.groups.byID, g.id)
	}
}

// groupMembers returns the members of the group with the given ID, in the
// order they started, and the join count when the newest one joined; no
// members when there is no such group.
func (t *tracker) groupMembers(id string) ([]*upload, uint64) {
	t.mu.RLock()
	g := t.groups.byID[id]
	if g == nil {
		t.mu.RUnlock()
		return nil, 0
	}
	members := make([]*upload, 0, len(g.members))
	for u := range g.members {
		members = append(members, u)
	}
	lastJoin := g.lastJoin
	t.mu.RUnlock()

	slices.SortFunc(members, func(a, b *upload) int {
		return cmp.Or(a.startedAt.Compare(b.startedAt), cmp.Compare(a.id, b.id))
	})
	return members, lastJoin
}

// GroupStatus is the JSON document that describes a group of uploads,
// served by GET <status_path>?group=<id> and carried by the group's
// events:
//
//	{"group": "...", "status": "uploading", "received": 3145728, "total": 10485760,
//	 "percent": 30, "speed": 1048576, "uploads": [<Status>, ...]}
type GroupStatus struct {
	Group string `json:"group"`
	// Status is "uploading" while any member is in flight; once all have
	// ended, "error" if any ended in error, else "aborted" if any was
	// aborted, else "complete".
	Status string `json:"status"`
	// Received is the sum of the members' received.
	Received int64 `json:"received"`
	// Total is the sum of the members' totals, or null while any
	// member's total is unknown.
	Total *int64 `json:"total"`
	// Percent is received/total as a whole number, or null without a total.
	Percent *int64 `json:"percent"`
	// Speed is the sum of the speeds of the members still uploading;
	// once none is, the group's average from its first start to its last
	// body's end.
	Speed int64 `json:"speed"`
	// Uploads are the members' statuses, in the order they started,
	// without their files (each member's own status has them).
	Uploads []Status `json:"uploads"`
}

// shortGroupStatus is the answer for a group without members (unknown),
// and the data of a group stream's pending event.
type shortGroupStatus struct {
	Group  string `json:"group"`
	Status string `json:"status"`
}

// groupHead is a GroupStatus without its uploads: what a group's
// document starts with.
type groupHead struct {
	Group    string `json:"group"`
	Status   string `json:"status"`
	Received int64  `json:"received"`
	Total    *int64 `json:"total"`
	Percent  *int64 `json:"percent"`
	Speed    int64  `json:"speed"`
}

// groupDoc is a group as it was looked at: its figures, and its
// members' shared documents. It is written member by member, never
// built whole in memory.
type groupDoc struct {
	head    groupHead
	members []*statusDoc
	ended   int // members in processing or a final state
}

// final reports whether every member of the group has ended.
func (g *groupDoc) final() bool {
	return g.head.Status != stateUploading.String()
}

// lookAtGroup takes the documents of a group's members as they are at
// now, and sums the group's figures from them.
func lookAtGroup(id string, members []*upload, now time.Time) *groupDoc {
	g := &groupDoc{head: groupHead{Group: id}, members: make([]*statusDoc, len(members))}
	for i, u := range members {
		g.members[i] = u.doc(now)
	}
	var total int64
	knownTotal := true
	inFlight, anyError, anyAborted, anyUploading := false, false, false, false
	var firstStart, lastBodyEnd int64
	for _, d := range g.members {
		m := d.summary
		g.head.Received += m.received
		if m.total < 0 {
			knownTotal = false
		} else {
			total += m.total
		}
		switch m.state {
		case stateUploading:
			anyUploading = true
			inFlight = true
			g.head.Speed += m.speed
		case stateError:
			anyError = true
		case stateAborted:
			anyAborted = true
		case stateComplete:
		default: // pending or processing
			inFlight = true
		}
		if m.state != stateUploading {
			g.ended++
		}
		if firstStart == 0 || m.startedAt < firstStart {
			firstStart = m.startedAt
		}
		lastBodyEnd = max(lastBodyEnd, m.bodyEndAt)
	}

	switch {
	case inFlight:
		g.head.Status = stateUploading.String()
	case anyError:
		g.head.Status = stateError.String()
	case anyAborted:
		g.head.Status = stateAborted.String()
	default:
		g.head.Status = stateComplete.String()
	}
	if !anyUploading {
		if span := time.Duration(lastBodyEnd - firstStart); span > 0 {
			g.head.Speed = int64(float64(g.head.Received) / span.Seconds())
		}
	}
	if knownTotal {
		g.head.Total = &total
		percent := int64(100)
		if total > 0 {
			percent = min(g.head.Received*100/total, 100)
		}
		g.head.Percent = &percent
	}
	return g
}

// writeTo writes the group's GroupStatus JSON: its figures, then each
// member's document without files, one at a time.
func (g *groupDoc) writeTo(w io.Writer) error {
	head, err := json.Marshal(g.head)
	if err != nil {
		return fmt.Errorf("encoding a group's status: %w", err)
	}
	head = append(head[:len(head)-1], `,"uploads":[`...)
	if _, err := w.Write(head); err != nil {
		return err
	}
	for i, d := range g.members {
		if i > 0 {
			if _, err := io.WriteString(w, ","); err != nil {
				return err
			}
		}
		if err := d.writeTo(w, false); err != nil {
			return err
		}
	}
	_, err = io.WriteString(w, "]}")
	return err
}
