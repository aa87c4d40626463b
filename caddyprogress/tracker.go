package caddyprogress

import (
	"container/heap"
	"errors"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"golang.org/x/time/rate"
)

// trackers holds every tracker by name. Being a package-level UsagePool,
// a tracker outlives config reloads: the new config's handlers take it
// before the old config's handlers let go of it, so uploads in flight
// and finished records are kept.
var trackers = caddy.NewUsagePool()

var (
	// errInFlight means the ID belongs to an upload still in flight.
	errInFlight = errors.New("an upload with this ID is already in flight")
	// errTrackerFull means every record the tracker may hold is in flight.
	errTrackerFull = errors.New("the tracker is full of uploads in flight")
)

// sweepEvery is how often expired records are removed.
const sweepEvery = 250 * time.Millisecond

// tracker is the set of uploads shared by every handler that names it.
// Finished uploads and reservations wait in a heap ordered by their
// expiry, so the sweeper and the eviction of the oldest record do not
// scan the whole map.
type tracker struct {
	name string

	mu       sync.RWMutex
	uploads  map[string]*upload
	expiring expiryHeap              // finished uploads and reservations
	waiters  map[string]*startWaiter // subscribers waiting for an ID to start
	total    *rate.Limiter           // the shared bucket of rate_limit_total, if any
	groups   groupSet                // groups of uploads (group.go)

	// countedBytes sums the bytes of the uploads counted by countBytes
	// (finished or forgotten), for the received bytes metric.
	countedBytes int64

	stop chan struct{}
}

// startWaiter is closed when an upload with its ID starts.
type startWaiter struct {
	started chan struct{}
	count   int
}

func newTracker(name string) *tracker {
	t := &tracker{
		name:    name,
		uploads: make(map[string]*upload),
		waiters: make(map[string]*startWaiter),
		stop:    make(chan struct{}),
	}
	go t.sweep()
	return t
}

// Destruct stops the sweeper once no config uses the tracker any more.
func (t *tracker) Destruct() error {
	close(t.stop)
	return nil
}

// start begins tracking an upload with the given ID and total (-1 when
// unknown). A finished upload or a reservation with that ID is replaced.
// When the tracker holds limit records, the one closest to expiry makes
// room; errTrackerFull means all of them are in flight.
func (t *tracker) start(id string, total int64, rateLimit int64, limit int) (*upload, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.uploads[id]; ok {
		switch old.currentState() {
		case stateUploading, stateProcessing, statePaused, stateDelivering:
			return nil, errInFlight
		}
		t.remove(old)
	}
	if !t.makeRoom(limit) {
		return nil, errTrackerFull
	}
	u := newUpload(id, total, time.Now(), stateUploading)
	u.rateLimit = rateLimit
	t.uploads[id] = u
	if w, ok := t.waiters[id]; ok {
		close(w.started)
		delete(t.waiters, id)
	}
	return u, nil
}

// reserve records a fresh ID as pending for retain, for a client that
// wants its ID before it uploads.
func (t *tracker) reserve(retain time.Duration, limit int) (*upload, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.makeRoom(limit) {
		return nil, errTrackerFull
	}
	now := time.Now()
	u := newUpload(newID(), -1, now, statePending)
	t.uploads[u.id] = u
	u.expiresAt = now.Add(retain)
	heap.Push(&t.expiring, u)
	return u, nil
}

// finish ends an upload and keeps its record for retain. It reports
// whether this call ended it (only the first does).
func (t *tracker) finish(u *upload, st state, upstreamStatus int, errMsg string, retain time.Duration) bool {
	now := time.Now()
	if !u.finish(st, upstreamStatus, errMsg, now) {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.countBytes(u)
	if t.uploads[u.id] == u { // not already replaced or removed
		u.expiresAt = now.Add(retain)
		heap.Push(&t.expiring, u)
	}
	return true
}

// get returns the record for id, or nil.
func (t *tracker) get(id string) *upload {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.uploads[id]
}

// watch returns the upload with the given ID if it has started. If not
// (unknown, or only reserved), it returns a channel closed when it
// starts, and a function to call when no longer waiting.
func (t *tracker) watch(id string) (*upload, <-chan struct{}, func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if u, ok := t.uploads[id]; ok && u.currentState() != statePending {
		return u, nil, func() {}
	}
	w, ok := t.waiters[id]
	if !ok {
		w = &startWaiter{started: make(chan struct{})}
		t.waiters[id] = w
	}
	w.count++
	return nil, w.started, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		w.count--
		if w.count == 0 && t.waiters[id] == w {
			delete(t.waiters, id)
		}
	}
}

// totalLimiter returns the tracker's shared bucket for rate_limit_total,
// made for the given rate and burst if the tracker has none yet. An
// existing bucket is returned unchanged: uploads in flight use it, and a
// config being provisioned may still fail, so its new rate is applied
// only once that config runs (applyTotalRate, throttle.go). Uploads take
// turns at it, so N uploads at once each get about 1/N of the rate, and
// a finished upload's share goes to the others.
func (t *tracker) totalLimiter(bytesPerSecond int64, burst int) *rate.Limiter {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.total == nil {
		t.total = newLimiter(bytesPerSecond, burst)
	}
	return t.total
}

// makeRoom removes the record closest to expiry while the tracker holds
// limit records or more. It reports false if that is not possible.
// The caller holds t.mu.
func (t *tracker) makeRoom(limit int) bool {
	for len(t.uploads) >= limit {
		if t.expiring.Len() == 0 {
			return false
		}
		t.remove(t.expiring[0])
	}
	return true
}

// remove forgets a record. The caller holds t.mu.
func (t *tracker) remove(u *upload) {
	t.countBytes(u)
	if u.retiredIndex >= 0 {
		heap.Remove(&t.expiring, u.retiredIndex)
	}
	if t.uploads[u.id] == u {
		delete(t.uploads, u.id)
	}
	t.leaveGroup(u)
}

// sweep removes expired records until the tracker is destructed.
func (t *tracker) sweep() {
	ticker := time.NewTicker(sweepEvery)
	defer ticker.Stop()
	for {
		select {
		case <-t.stop:
			return
		case now := <-ticker.C:
			t.removeExpired(now)
		}
	}
}

func (t *tracker) removeExpired(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.expiring.Len() > 0 && !t.expiring[0].expiresAt.After(now) {
		t.remove(t.expiring[0])
	}
}

// expiryHeap orders records by expiresAt, soonest first (container/heap).
type expiryHeap []*upload

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expiresAt.Before(h[j].expiresAt) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].retiredIndex = i
	h[j].retiredIndex = j
}

func (h *expiryHeap) Push(x any) {
	u := x.(*upload)
	u.retiredIndex = len(*h)
	*h = append(*h, u)
}

func (h *expiryHeap) Pop() any {
	old := *h
	u := old[len(old)-1]
	old[len(old)-1] = nil
	u.retiredIndex = -1
	*h = old[:len(old)-1]
	return u
}

// Interface guard
var _ caddy.Destructor = (*tracker)(nil)
