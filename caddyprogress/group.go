package caddyprogress

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"go.uber.org/zap"
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
// as long as one of its members' records does: live ones (in flight) by
// pointer, finished ones by the key of their record in the finished
// store.
type group struct {
	id       string
	key      uint64 // the hash of id, the group's key in groupSet
	live     map[*upload]struct{}
	finished map[uint64]struct{}
	lastJoin uint64 // the tracker's join count when the newest member joined
}

func (g *group) size() int { return len(g.live) + len(g.finished) }

// groupSet is a tracker's groups, guarded by the tracker's lock.
type groupSet struct {
	byKey map[uint64]*group // by the hash of the group ID
	joins uint64            // members that ever joined any group, so streams can tell a new one did
}

// uploadGroup returns the group ID the request names in its
// X-Upload-Group header: "" when it has none, an error when the ID is
// not valid (the same rules as upload IDs).
func uploadGroup(r *http.Request) (string, error) {
	values, ok := r.Header[groupKey]
	if !ok {
		return "", nil
	}
	if err := validateGroupID(values[0]); err != nil {
		return "", fmt.Errorf("%s header: %w", groupHeader, err)
	}
	return values[0], nil
}

// screenGroup returns the group an upload request joins: the one its
// X-Upload-Group header names ("" for none; an error, the header left
// as it is, when the ID is not valid). With status_access token, the
// request must show the group's token (X-Upload-Group-Token, see
// showsToken): a client gets it from a group reservation (POST
// <status_path>?group), the only request that makes a group and learns
// its token. Without it the upload is tracked on its own, whether or
// not the group exists, so a stranger can neither join another's group
// nor learn that it exists; its X-Upload-Group header is then removed,
// so that the backend does not take it for a member. The group token
// header is ours: it never goes to the backend.
func (h *Handler) screenGroup(r *http.Request) (string, error) {
	group, err := uploadGroup(r)
	if err != nil || !h.access.on() {
		return group, err
	}
	if group != "" && !h.showsToken(r, groupToken, group, groupTokenHeader) {
		h.logger.Debug("upload without its group's token; tracking it on its own", zap.String("group", group))
		r.Header.Del(groupHeader)
		group = ""
	}
	r.Header.Del(groupTokenHeader)
	return group, nil
}

// findGroup returns the group with the given ID, or nil. The caller
// holds t.mu.
func (t *tracker) findGroup(id string) *group {
	g := t.groups.byKey[t.finished.hash(id)]
	if g == nil || g.id != id {
		return nil
	}
	return g
}

// join makes u a member of the group with the given ID; "" is no group.
// A group that has limit members takes no more: u stays on its own, and
// join reports false (as it does when max_memory has no room for a new
// group, and in the unlikely case of two group IDs with one hash).
func (t *tracker) join(id string, u *upload, limit int) bool {
	if id == "" {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.uploads[u.id] != u {
		return true // already replaced or removed
	}
	if t.groups.byKey == nil {
		t.groups.byKey = make(map[uint64]*group)
	}
	key := t.finished.hash(id)
	g := t.groups.byKey[key]
	if g == nil {
		if !t.fitMemory(groupBytes(id)) {
			return false
		}
		t.memory.live.Add(groupBytes(id))
		g = &group{id: id, key: key, live: make(map[*upload]struct{}), finished: make(map[uint64]struct{})}
		t.groups.byKey[key] = g
	}
	if g.id != id || g.size() >= limit {
		return false
	}
	t.groups.joins++
	g.live[u] = struct{}{}
	g.lastJoin = t.groups.joins
	u.group = g
	return true
}

// leaveGroup takes a live u out of its group. The caller holds t.mu.
func (t *tracker) leaveGroup(u *upload) {
	if g := u.group; g != nil {
		u.group = nil
		t.leaveGroupLive(g, u)
	}
}

// leaveGroupLive takes the live u out of g (nil for none), and forgets
// the group once it has no member left. The caller holds t.mu.
func (t *tracker) leaveGroupLive(g *group, u *upload) {
	if g == nil {
		return
	}
	delete(g.live, u)
	t.forgetIfEmpty(g)
}

// leaveGroupFinished takes the finished record with the given key out of
// the group with the given key (0 for none). The caller holds t.mu.
func (t *tracker) leaveGroupFinished(groupKey, recordKey uint64) {
	if g := t.groups.byKey[groupKey]; g != nil {
		if _, ok := g.finished[recordKey]; ok {
			delete(g.finished, recordKey)
			t.memory.live.Add(-finishedMemberBytes)
		}
		t.forgetIfEmpty(g)
	}
}

func (t *tracker) forgetIfEmpty(g *group) {
	if g.size() == 0 && t.groups.byKey[g.key] == g {
		delete(t.groups.byKey, g.key)
		t.memory.live.Add(-groupBytes(g.id))
	}
}

// groupMembers returns the documents of the members of the group with
// the given ID as they are at now, in the order they started, and the
// join count when the newest one joined; no members when there is no
// such group.
func (t *tracker) groupMembers(id string, now time.Time) ([]*statusDoc, uint64) {
	t.mu.RLock()
	g := t.findGroup(id)
	if g == nil {
		t.mu.RUnlock()
		return nil, 0
	}
	docs := make([]*statusDoc, 0, g.size())
	for key := range g.finished {
		i := t.finished.index[key]
		d := t.finished.doc(i)
		d.id = string(t.finished.idOf(i))
		docs = append(docs, d)
	}
	live := make([]*upload, 0, len(g.live))
	for u := range g.live {
		live = append(live, u)
	}
	lastJoin := g.lastJoin
	t.mu.RUnlock()

	for _, u := range live { // outside the lock: making a document may need it
		docs = append(docs, u.memberDoc(now)) // never its files
	}
	slices.SortFunc(docs, func(a, b *statusDoc) int {
		return cmp.Or(cmp.Compare(a.summary.startedAt, b.summary.startedAt), cmp.Compare(a.id, b.id))
	})
	return docs, lastJoin
}

// hasGroup reports whether the group with the given ID has a member.
func (t *tracker) hasGroup(id string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.findGroup(id) != nil
}

// groupEnded reports whether every member of the group has ended, or
// it has none.
func (t *tracker) groupEnded(id string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	g := t.findGroup(id)
	if g == nil {
		return true
	}
	for u := range g.live {
		if !u.currentState().Final() {
			return false
		}
	}
	return true
}

// GroupStatus is the JSON document that describes a group of uploads
// (see progress.GroupStatus).
type GroupStatus = progress.GroupStatus

// shortGroupStatus is the answer for a group without members (unknown),
// and the data of a group stream's pending event.
type shortGroupStatus struct {
	Group  string `json:"group"`
	Status string `json:"status"`
}

// groupHead is a group's status without its members (progress.GroupHead):
// what a group's document starts with.
type groupHead = progress.GroupHead

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
	return g.head.Status != progress.StateUploading.String()
}

// lookAtGroup sums a group's figures from its members' documents.
func lookAtGroup(id string, members []*statusDoc) *groupDoc {
	g := &groupDoc{head: groupHead{Group: id}, members: members}
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
		case progress.StateUploading:
			anyUploading = true
			inFlight = true
			g.head.Speed += m.speed
		case progress.StateError:
			anyError = true
		case progress.StateAborted:
			anyAborted = true
		case progress.StateComplete:
		default: // pending or processing
			inFlight = true
		}
		if m.state != progress.StateUploading {
			g.ended++
		}
		if firstStart == 0 || m.startedAt < firstStart {
			firstStart = m.startedAt
		}
		lastBodyEnd = max(lastBodyEnd, m.bodyEndAt)
	}

	switch {
	case inFlight:
		g.head.Status = progress.StateUploading.String()
	case anyError:
		g.head.Status = progress.StateError.String()
	case anyAborted:
		g.head.Status = progress.StateAborted.String()
	default:
		g.head.Status = progress.StateComplete.String()
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
