package caddyprogress

import (
	"container/heap"
	"errors"
	"sync"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
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
	// errTooManyReservations means max_reservations IDs are reserved, or
	// the tracker is full: a reservation never removes a finished record.
	errTooManyReservations = errors.New("too many IDs are reserved")
)

// sweepEvery is how often expired records are removed.
const sweepEvery = 250 * time.Millisecond

// tracker is the set of uploads shared by every handler that names it.
// Uploads in flight and reservations are live records (*upload);
// finished uploads are kept compact in a finishedStore (finished.go).
// Finished records and reservations wait in heaps ordered by their
// expiry, so the sweeper and the eviction of the oldest record do not
// scan anything, and finished records make room before reservations do.
// Everything it keeps counts toward max_memory (memory.go).
type tracker struct {
	name string

	mu           sync.RWMutex
	uploads      map[string]*upload      // in flight, or reserved
	finished     *finishedStore          // finished uploads
	reservations expiryHeap              // reserved IDs, not started
	waiters      map[string]*startWaiter // subscribers waiting for an ID to start
	total        *rate.Limiter           // the shared bucket of rate_limit_total, if any
	groups       groupSet                // groups of uploads (group.go)
	subscribers  subscriberCounts        // open event streams (subscribers.go)
	shared       sharedSet               // the Redis sides shared with other instances (sharedtracker.go)
	settings     settingsUsers           // the tracker-wide settings of its handlers (trackersettings.go)

	// countedBytes sums the bytes of the uploads counted by countBytes
	// (finished or forgotten), for the received bytes metric.
	countedBytes int64

	memory  memoryAccount // bytes kept, against max_memory (memory.go)
	evicted evictionCounters

	stop chan struct{}
}

// startWaiter is closed when an upload with its ID starts.
type startWaiter struct {
	started chan struct{}
	count   int
}

func newTracker(name string) *tracker {
	t := &tracker{
		name:     name,
		uploads:  make(map[string]*upload),
		finished: newFinishedStore(),
		waiters:  make(map[string]*startWaiter),
		evicted:  newEvictionCounters(name),
		stop:     make(chan struct{}),
	}
	t.setMaxMemory(DefaultMaxMemory)
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
// When the tracker holds limit records, or its max_memory is taken,
// finished records make room (the oldest first), then reservations;
// errTrackerFull means the rest is in flight. When that leaves less than
// a sixteenth of max_memory free, the upload is tracked without its
// multipart files (withoutFiles).
func (t *tracker) start(id string, total int64, rateLimit int64, limit int) (*upload, error) {
	u := newUpload(id, total, time.Now(), progress.StateUploading) // made before the lock: allocation may assist the GC
	u.rateLimit = rateLimit
	u.tracker = t
	cost := recordBytes(id)
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.uploads[id]; ok {
		switch old.currentState() {
		case progress.StateUploading, progress.StateProcessing, progress.StatePaused, progress.StateDelivering:
			return nil, errInFlight
		}
		t.remove(old)
	}
	if i, ok := t.finished.find(id); ok {
		t.removeFinished(i, evictReplaced)
	}
	if !t.makeRoom(limit) {
		return nil, errTrackerFull
	}
	withFiles := t.fitMemory(cost + t.memory.budget.Load()/16)
	if !withFiles && !t.fitMemory(cost) {
		return nil, errTrackerFull
	}
	u.withoutFiles = !withFiles
	t.memory.live.Add(cost)
	t.uploads[id] = u
	if w, ok := t.waiters[id]; ok {
		close(w.started)
		delete(t.waiters, id)
	}
	return u, nil
}

// reserve records a fresh ID as pending for retain, for a client that
// wants its ID before it uploads. It never removes a record to make
// room: errTooManyReservations means maxReservations IDs are reserved
// or the tracker is full (limit records, or max_memory).
func (t *tracker) reserve(retain time.Duration, limit, maxReservations int) (*upload, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	u := newUpload(newID(), -1, now, progress.StatePending)
	cost := recordBytes(u.id)
	if t.reservations.Len() >= maxReservations || t.records() >= limit || t.memory.used()+cost > t.memory.budget.Load() {
		return nil, errTooManyReservations
	}
	u.tracker = t
	t.memory.live.Add(cost)
	t.uploads[u.id] = u
	u.expiresAt = now.Add(retain)
	heap.Push(&t.reservations, u)
	return u, nil
}

// finish ends an upload and keeps its record for retain, compact: its
// final document goes to the finished store and the live record is
// dropped. It reports whether this call ended it (only the first does).
func (t *tracker) finish(u *upload, st state, upstreamStatus int, errMsg string, retain time.Duration) bool {
	now := time.Now()
	if !u.finish(st, upstreamStatus, errMsg, now) {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.uploads[u.id] != u { // already replaced or removed
		return true
	}
	g := u.group
	u.group = nil // it moves to the finished record, below
	t.remove(u)
	d := u.finalDoc.Load()
	if i, ok := t.finished.index[t.finished.hash(u.id)]; ok { // another ID with the same hash
		t.removeFinished(i, evictReplaced)
	}
	growth := t.finished.growth(len(u.id) + len(d.head) + len(d.files))
	if g != nil {
		growth += finishedMemberBytes
	}
	if !t.fitMemory(growth) {
		t.leaveGroupLive(g, u) // too large to keep
		return true
	}
	var groupKey uint64
	if g != nil {
		groupKey = g.key
	}
	i := t.finished.put(u.id, d, upstreamStatus, groupKey, now.Add(retain))
	t.memory.syncStore(t.finished)
	if g != nil {
		g.finished[t.finished.slots[i].idHash] = struct{}{}
		t.memory.live.Add(finishedMemberBytes)
		t.leaveGroupLive(g, u)
	}
	return true
}

// get returns the live record for id (in flight or reserved), or nil.
func (t *tracker) get(id string) *upload {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.uploads[id]
}

// records counts the records held. The caller holds t.mu.
func (t *tracker) records() int {
	return len(t.uploads) + t.finished.Len()
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

// makeRoom removes records while the tracker holds limit records or
// more: the finished record closest to expiry first, then the
// reservation closest to expiry. It reports false if that is not
// possible. The caller holds t.mu.
func (t *tracker) makeRoom(limit int) bool {
	for t.records() >= limit {
		if !t.evictOne(evictMaxUploads) {
			return false
		}
	}
	return true
}

// evictOne removes the finished record closest to expiry, or else the
// reservation closest to expiry. It reports false when there is
// neither. The caller holds t.mu.
func (t *tracker) evictOne(reason int) bool {
	if i, ok := t.finished.oldest(); ok {
		t.removeFinished(i, reason)
		return true
	}
	if t.reservations.Len() > 0 {
		if c := t.evicted.reservations[reason]; c != nil {
			c.Inc()
		}
		t.remove(t.reservations[0])
		return true
	}
	return false
}

// remove forgets a live record, and releases its memory. The caller
// holds t.mu.
func (t *tracker) remove(u *upload) {
	t.countBytes(u)
	if u.retiredIndex >= 0 {
		heap.Remove(&t.reservations, u.retiredIndex)
	}
	if t.uploads[u.id] == u {
		delete(t.uploads, u.id)
		t.memory.live.Add(-recordBytes(u.id) - u.releaseMemory())
	}
	t.leaveGroup(u)
}

// removeFinished forgets a finished record. The caller holds t.mu.
func (t *tracker) removeFinished(i uint32, reason int) {
	if c := t.evicted.finished[reason]; c != nil {
		c.Inc()
	}
	slot := &t.finished.slots[i]
	t.leaveGroupFinished(slot.groupHash, slot.idHash)
	t.finished.remove(i)
	t.memory.syncStore(t.finished)
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
	for {
		i, ok := t.finished.oldest()
		if !ok || t.finished.slots[i].expiresAt > now.UnixNano() {
			break
		}
		t.removeFinished(i, evictExpired)
	}
	for t.reservations.Len() > 0 && !t.reservations[0].expiresAt.After(now) {
		t.remove(t.reservations[0])
	}
}

// expiryHeap orders reservations by expiresAt, soonest first
// (container/heap).
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
