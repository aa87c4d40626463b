package caddyprogress

import (
	"context"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"golang.org/x/time/rate"
)

// Where upload state lives. A handler chooses its store once, at
// provision (newUploadStore): this instance's tracker (localStore,
// below), or with redis a store that decorates it with the other
// instances (sharedStore, sharedstore.go): uploads start and reserve
// their ID here and across the instances, end and tell the others, and
// are read here first, then from the others. The upload start and end
// (lifecycle.go) and the status, events, WebSocket, nginx and group
// routes go through it and never ask which it is, nor where an upload
// runs.

// uploadStore is where uploads start, are reserved and end, and where
// the progress routes read uploads and groups.
type uploadStore interface {
	// lookup returns what is known of id now (a record that is not
	// found when nothing is). current is for the routes that show
	// progress (status, nginx report): an upload in flight on another
	// instance is asked for its progress as of now, waiting at most an
	// interval for it.
	lookup(ctx context.Context, id string, current bool) record
	// follow follows id's documents for an event stream, from the
	// moment it returns, until closed.
	follow(id string) uploadFollow
	// groupMembers returns the documents of the group's members as they
	// are at now, in the order they started, and a count that grows as
	// members join (no members when there is no such group).
	groupMembers(ctx context.Context, group string, now time.Time) ([]*statusDoc, uint64)
	// followGroup follows a group's members for an event stream, until
	// closed.
	followGroup(group string) groupFollow
	// hasGroup reports whether the group has a member.
	hasGroup(group string) bool
	// groupEnded reports whether every member of the group has ended,
	// or it has none.
	groupEnded(group string) bool
	// reserved reports whether id is reserved and has not started
	// (client_ids off accepts it).
	reserved(id string) bool

	// start records a new upload in flight here (total bytes, -1 when
	// unknown) and, with redis, claims its ID across the instances:
	// errInFlight when it is in flight here or on another instance,
	// errTrackerFull when no record is free here or across them.
	// prepare, when not nil, fills the record before it is claimed.
	start(ctx context.Context, id, group string, total int64, lim startLimits, prepare func(*upload)) (*upload, error)
	// reserve records a fresh ID as reserved for retain, here and across
	// the instances: errTooManyReservations when there is no room.
	reserve(ctx context.Context, retain time.Duration, maxUploads, maxReservations int) (*upload, error)
	// ended hands an upload that ended here over to the other instances
	// (its final document); nothing without redis.
	ended(u *upload)
	// shareRate sets limiter, the tracker's shared bucket, to total
	// (rate_limit_total), or with redis to this instance's share of it:
	// every 100ms while this instance has uploads reading their body (and
	// once when it has none left), in proportion to them; an idle
	// instance sends Redis nothing, and its next upload's claim takes its
	// share.
	shareRate(total rate.Limit, limiter *rate.Limiter)
}

// startLimits are a handler's limits on the uploads it starts.
type startLimits struct {
	rateLimit  int64 // bytes per second of each upload, 0 for none
	maxUploads int   // records the tracker holds
}

// record is what is known of an upload, wherever it runs: a live one
// here (in flight, or reserved), or a document (a finished upload's
// kept here, or the latest another instance published) with the status
// code of its answer. Routes read it through its methods.
type record struct {
	live     *upload
	doc      *statusDoc
	upstream int // with doc: the answer's status code, 0 for none
}

// found reports whether anything is known of the upload.
func (r record) found() bool { return r.live != nil || r.doc != nil }

// state is the upload's state now; pending when nothing is known.
func (r record) state() state {
	switch {
	case r.live != nil:
		return r.live.currentState()
	case r.doc != nil:
		return r.doc.summary.state
	}
	return progress.StatePending
}

// started reports whether the upload has started: known, and more than
// a reservation.
func (r record) started() bool { return r.found() && r.state() != progress.StatePending }

// ended reports whether the upload has ended, or nothing is known of it.
func (r record) ended() bool { return !r.found() || r.state().Final() }

// document returns the upload's status document as of now; nil when
// max_memory has no room to encode a live one's now (the caller
// answers 503, or tries later), or when nothing is known.
func (r record) document(now time.Time) *statusDoc {
	if r.live != nil {
		return r.live.doc(now)
	}
	return r.doc
}

// progress returns what the nginx report shows, without encoding a
// document: the state, the bytes received, the total (-1 when
// unknown) and the answer's status code (0 for none, or before the
// end).
func (r record) progress() (st state, received, total int64, upstream int) {
	if u := r.live; u != nil {
		st, received, total = u.currentState(), u.received.Load(), u.total
		if st.Final() {
			u.mu.Lock()
			upstream = u.upstreamStatus
			u.mu.Unlock()
		}
		return st, received, total, upstream
	}
	if r.doc == nil {
		return progress.StatePending, 0, -1, 0
	}
	m := r.doc.summary
	return m.state, m.received, m.total, r.upstream
}

// lookup returns the tracker's record for id; none when unknown.
func (t *tracker) lookup(id string) record {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.lookupLocked(id)
}

func (t *tracker) lookupLocked(id string) record {
	if u, ok := t.uploads[id]; ok {
		return record{live: u}
	}
	if i, ok := t.finished.find(id); ok {
		return record{doc: t.finished.doc(i), upstream: int(t.finished.slots[i].upstream)}
	}
	return record{}
}

// awaitStart returns the record of the upload with the given ID if it
// has started. If not (unknown, or only reserved), it returns a channel
// closed when it starts, and a function to call when no longer waiting.
func (t *tracker) awaitStart(id string) (record, <-chan struct{}, func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r := t.lookupLocked(id); r.started() {
		return r, nil, func() {}
	}
	w, ok := t.waiters[id]
	if !ok {
		w = &startWaiter{started: make(chan struct{})}
		t.waiters[id] = w
	}
	w.count++
	return record{}, w.started, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		w.count--
		if w.count == 0 && t.waiters[id] == w {
			delete(t.waiters, id)
		}
	}
}

// localStore reads this instance's tracker only.
type localStore struct{ t *tracker }

func (s localStore) lookup(_ context.Context, id string, _ bool) record { return s.t.lookup(id) }

func (s localStore) follow(id string) uploadFollow { return s.t.follow(id) }

func (s localStore) start(_ context.Context, id, _ string, total int64, lim startLimits, prepare func(*upload)) (*upload, error) {
	u, err := s.t.start(id, total, lim.rateLimit, lim.maxUploads)
	if err == nil && prepare != nil {
		prepare(u)
	}
	return u, err
}

func (s localStore) reserve(_ context.Context, retain time.Duration, maxUploads, maxReservations int) (*upload, error) {
	return s.t.reserve(retain, maxUploads, maxReservations)
}

func (localStore) ended(*upload) {}

func (localStore) shareRate(total rate.Limit, limiter *rate.Limiter) { limiter.SetLimit(total) }

func (s localStore) groupMembers(_ context.Context, group string, now time.Time) ([]*statusDoc, uint64) {
	return s.t.groupMembers(group, now)
}

func (s localStore) followGroup(group string) groupFollow { return trackerGroup{s.t, group} }

func (s localStore) hasGroup(group string) bool { return s.t.hasGroup(group) }

func (s localStore) groupEnded(group string) bool { return s.t.groupEnded(group) }

func (s localStore) reserved(id string) bool {
	u := s.t.get(id)
	return u != nil && u.currentState() == progress.StatePending
}

// trackerGroup follows a group of this instance's tracker: its members
// are looked at when asked.
type trackerGroup struct {
	t     *tracker
	group string
}

func (g trackerGroup) members(now time.Time) ([]*statusDoc, uint64) {
	return g.t.groupMembers(g.group, now)
}

func (trackerGroup) close() {}

// Interface guards
var (
	_ uploadStore = localStore{}
	_ groupFollow = trackerGroup{}
)
