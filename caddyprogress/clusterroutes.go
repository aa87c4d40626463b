package caddyprogress

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"
)

// The routes' view of uploads on other instances, with redis: status,
// nginx report and group status look the shared store up when this
// instance has no record (or only a reservation) of an ID; event
// streams of such an ID follow its documents through pub/sub
// (sharedevents.go).

// sharedOn reports whether the handler shares its tracker through redis.
func (h *Handler) sharedOn() bool { return h.shared != nil }

// lookupShared completes a local record with the shared store's: when
// this instance has none of id, or only a reservation, the document
// published by another instance (if any) is the record.
func (h *Handler) lookupShared(ctx context.Context, id string, rec record) record {
	return h.lookupSharedFor(ctx, id, rec, false)
}

// lookupSharedWatched is lookupShared for a route that shows progress
// (status, nginx report): an upload in flight on another instance (or
// a reservation) is watched, so that its instance publishes its
// progress; the first time in a watch period, the answer waits (at most
// an interval) for the document that instance then sends, so that it
// is current, not the one its claim stored.
func (h *Handler) lookupSharedWatched(ctx context.Context, id string, rec record) record {
	return h.lookupSharedFor(ctx, id, rec, true)
}

func (h *Handler) lookupSharedFor(ctx context.Context, id string, rec record, watch bool) record {
	if !h.sharedOn() || rec.final != nil || (rec.live != nil && rec.live.currentState() != statePending) {
		return rec
	}
	d, err := h.shared.c.lookup(ctx, id)
	if err != nil || (rec.live != nil && d.state == statePending) {
		return rec
	}
	if watch && !d.state.Final() && h.shared.c.watchDue(id) {
		d = h.currentShared(ctx, id, d)
	}
	remote, ok := h.remoteRecord(d)
	if !ok {
		return rec
	}
	return remote
}

// currentShared watches id, whose stored document is d, and returns the
// document its instance sends in answer, or d if none comes within an
// interval (a reservation's is not waited for: nothing runs yet).
func (h *Handler) currentShared(ctx context.Context, id string, d sharedDoc) sharedDoc {
	if d.state == statePending {
		_ = h.shared.c.watch(ctx, id)
		return d
	}
	sub, err := h.shared.c.subscribe(ctx, id, false) // before the watch: its answer is not missed
	if err != nil {
		return d
	}
	defer sub.close()
	if h.shared.c.watch(ctx, id) != nil {
		return d
	}
	timer := time.NewTimer(time.Duration(h.Interval))
	defer timer.Stop()
	for {
		select {
		case <-sub.notify():
			newer := false
			for _, n := range sub.take() {
				if n.seq > d.seq {
					d, newer = n, true
				}
			}
			if newer {
				return d
			}
		case <-timer.C:
			return d
		case <-ctx.Done():
			return d
		}
	}
}

// remoteRecord is the record of a document published by another
// instance; false if it cannot be read.
func (h *Handler) remoteRecord(d sharedDoc) (record, bool) {
	doc, upstream, err := docFromJSON(d.json)
	if err != nil {
		return record{}, false
	}
	return record{remote: doc, upstream: upstream}, true
}

// nginxRemoteReport is nginxReport for a document of another instance.
func nginxRemoteReport(d *statusDoc, upstream int) string {
	m := d.summary
	switch m.state {
	case statePending:
		return `{ "state" : "starting" }`
	case stateUploading, stateProcessing, statePaused, stateDelivering:
		received, size := m.received, m.total
		if size < 0 {
			size = received
		}
		if m.state == stateProcessing || m.state == stateDelivering {
			received = size
		}
		return fmt.Sprintf(`{ "state" : "uploading", "received" : %d, "size" : %d }`, received, size)
	}
	return nginxFinalReport(m.state, upstream)
}

// reservedElsewhere reports whether id is reserved on another instance
// (client_ids off accepts it as it accepts a local reservation).
func (h *Handler) reservedElsewhere(id string) bool {
	if !h.sharedOn() {
		return false
	}
	d, err := h.shared.c.lookup(context.Background(), id)
	return err == nil && d.state == statePending
}

// groupMembersShared is tracker.groupMembers completed with the members
// on other instances: remote holds their latest documents by ID (nil
// to look them up now). A member known here is shown as known here.
func (h *Handler) groupMembersShared(ctx context.Context, id string, now time.Time, remote map[string]sharedDoc) ([]*statusDoc, uint64) {
	members, lastJoin := h.tracker.groupMembers(id, now)
	if !h.sharedOn() {
		return members, lastJoin
	}
	if remote == nil {
		docs, err := h.shared.c.lookupGroup(ctx, id)
		if err != nil {
			return members, lastJoin
		}
		remote = make(map[string]sharedDoc, len(docs))
		for _, d := range docs {
			remote[d.id] = d
		}
	}
	local := make(map[string]bool, len(members))
	for _, d := range members {
		local[d.id] = true
	}
	added := false
	for memberID, sd := range remote {
		if local[memberID] {
			continue
		}
		doc, _, err := docFromJSON(sd.json)
		if err != nil {
			continue
		}
		doc.id = memberID
		members = append(members, doc)
		added = true
	}
	if added {
		slices.SortFunc(members, func(a, b *statusDoc) int {
			return cmp.Or(cmp.Compare(a.summary.startedAt, b.summary.startedAt), cmp.Compare(a.id, b.id))
		})
	}
	return members, lastJoin + uint64(len(remote))
}
