package resumable

import (
	"sync"
	"time"
)

// Budget counts the disk bytes each upload of one store takes or may
// take, for max_disk (disk.go): the spool's own count in this process,
// or (Coordinator.Budget, with max_disk set) one count per store shared
// by every instance that uses it. Its methods never fail: a shared
// Budget that cannot reach where it counts decides with this instance's
// own count meanwhile. A limit of 0 means none.
type Budget interface {
	// Reserve sets what upload id reserves to n, unless n grows it and
	// all uploads together would then take more than limit: false then,
	// and the reservation is left as it was.
	Reserve(id string, n, limit int64) bool
	// ReserveAtLeast grows what upload id reserves to n as Reserve does;
	// a reservation of n or more is left as it is.
	ReserveAtLeast(id string, n, limit int64) bool
	// Grow raises what upload id reserves towards want, as far as limit
	// allows, and returns what it reserves then.
	Grow(id string, want, limit int64) int64
	// Settle sets what upload id reserves after a request: what it
	// stored (taken whatever the limit), or what it held, up to keep.
	Settle(id string, stored, keep int64)
	// Forget drops upload id's reservation: it is removed, or delivered.
	Forget(id string)
	// Prune drops the reservations not changed for olderThan whose
	// upload is not in the store (kept reports those that are): those of
	// an instance that died between reserving and creating an upload. A
	// shared Budget may look only once a reservation was refused (so that
	// an idle instance sends nothing).
	Prune(kept func(id string) bool, olderThan time.Duration)
	// Step is how much a body's reservation grows at a time (disk.go).
	Step() int64
}

// staleReservation is how long a reservation without an upload in the
// store is kept (a creation reserves, then makes its files at once).
const staleReservation = time.Minute

// NewLocalBudget is a Budget counted in this process alone.
func NewLocalBudget() Budget {
	return &localBudget{reserved: make(map[string]localReservation)}
}

// localBudget is a Budget in this process's memory.
type localBudget struct {
	mu       sync.Mutex
	reserved map[string]localReservation
	total    int64 // the sum of reserved
}

type localReservation struct {
	n       int64
	changed time.Time
}

func (b *localBudget) set(id string, n int64) {
	b.total += n - b.reserved[id].n
	b.reserved[id] = localReservation{n: n, changed: time.Now()}
}

func (b *localBudget) Reserve(id string, n, limit int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	held := b.reserved[id].n
	if limit > 0 && n > held && b.total-held+n > limit {
		return false
	}
	b.set(id, n)
	return true
}

func (b *localBudget) ReserveAtLeast(id string, n, limit int64) bool {
	b.mu.Lock()
	held := b.reserved[id].n
	b.mu.Unlock()
	if n <= held {
		return true
	}
	return b.Reserve(id, n, limit)
}

func (b *localBudget) Grow(id string, want, limit int64) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	held := b.reserved[id].n
	if want <= held {
		return held
	}
	if limit > 0 {
		want = min(want, held+max(limit-b.total, 0))
	}
	b.set(id, want)
	return want
}

func (b *localBudget) Settle(id string, stored, keep int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.set(id, max(stored, min(b.reserved[id].n, keep)))
}

func (b *localBudget) Forget(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total -= b.reserved[id].n
	delete(b.reserved, id)
}

func (b *localBudget) Prune(kept func(id string) bool, olderThan time.Duration) {
	cutoff := time.Now().Add(-olderThan)
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, r := range b.reserved {
		if r.changed.Before(cutoff) && !kept(id) {
			b.total -= r.n
			delete(b.reserved, id)
		}
	}
}

// Step is 64 KiB: the budget's lock is taken once per step, not per
// read, and a request trickling its body holds at most this much it has
// not sent, so it takes many such requests to fill max_disk.
func (*localBudget) Step() int64 { return 64 << 10 }

// reservations lists what each upload reserves (to move them to
// another Budget).
func (b *localBudget) reservations() map[string]int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]int64, len(b.reserved))
	for id, r := range b.reserved {
		out[id] = r.n
	}
	return out
}

// Interface guard
var _ Budget = (*localBudget)(nil)
