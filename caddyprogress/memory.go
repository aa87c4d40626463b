package caddyprogress

import (
	runtimemetrics "runtime/metrics"
	"sync/atomic"
	"unsafe"
)

// DefaultMaxMemory is the default max_memory of a tracker; minMaxMemory
// the least it may be.
const (
	DefaultMaxMemory = 64 << 20
	minMaxMemory     = 64 << 10
)

// What a tracker keeps is counted as it is kept, toward max_memory:
//
//   - a live record (in flight or reserved): the upload struct, its done
//     channel, its ID, its entry in the tracker's map and in a group's
//     (recordBytes);
//   - a multipart upload's parts, each as it is added: the part struct,
//     its names and its place in the list (partBytes);
//   - a group: its struct, ID, maps and entry (groupBytes), and each
//     finished member's entry in it (finishedMemberBytes);
//   - the shared document of an upload in flight, counted before it is
//     made (the most it can take, from its parts' names) and kept;
//     a live record reserves room for its document without files (its
//     head, what groups show), so a group's read needs none;
//   - the finished store: its chunks as allocated, its slots, heap and
//     index (finishedStore.bytes).
//
// max_memory bounds the heap the tracker makes the process hold, the
// garbage collector's headroom included: Go lets the heap grow to
// (1 + GOGC/100) times what is live before it collects (twice, with the
// default GOGC=100), so the tracker keeps at most max_memory divided by
// that factor (keepBudget): half of it by default. With GOGC=off the
// collector runs only at the memory limit, and the tracker keeps up to
// max_memory.
//
// When that would pass the budget, finished records go first (the
// oldest first), then reservations; a new upload that then leaves less
// than a sixteenth of max_memory free is tracked without its files, and
// one whose record does not fit at all is proxied untracked. A part that
// does not fit makes its upload give up its files; a document that does
// not fit is not made: its reader gets 503 with Retry-After (an event
// stream tries again at its next interval).

// Fixed sizes, from the structs themselves where Go can tell them.
const (
	chanBytes           = 96 // a chan struct{} (runtime.hchan)
	liveMapEntryBytes   = 48 // a map[string]*upload entry: key, value, slack
	partSlotBytes       = 8  // a *part in the list
	stringHeaderBytes   = 16 // a filename's *string target
	groupMapEntryBytes  = 48 // an entry of a group's member maps
	docStructBytes      = int64(unsafe.Sizeof(statusDoc{}))
	uploadStructBytes   = int64(unsafe.Sizeof(upload{}))
	partStructBytes     = int64(unsafe.Sizeof(part{}))
	partListStructBytes = int64(unsafe.Sizeof(partList{}))
	groupStructBytes    = int64(unsafe.Sizeof(group{}))
	mapHeaderBytes      = 48 // an empty map
	finishedMemberBytes = 24 // an entry of a group's map of finished members
)

// groupBytes is what a group with the given ID keeps besides its
// members' entries.
func groupBytes(id string) int64 {
	return groupStructBytes + 2*mapHeaderBytes + indexEntryBytes + int64(len(id))
}

// maxHeadBytes is the most a live upload's document takes without its
// files: its ID (at most progress.MaxIDLength characters, none escaped), times
// and figures, and a resumable upload's status
// (TestLiveHeadFitsItsReserve).
const maxHeadBytes = 1024

// headReserveBytes is what a live record counts for its head document
// (memberDoc), kept or not, so that a group's status never needs room
// for its members' entries.
const headReserveBytes = docStructBytes + maxHeadBytes

// recordBytes is what a live record with the given ID keeps, its head
// document included.
func recordBytes(id string) int64 {
	return uploadStructBytes + chanBytes + liveMapEntryBytes + groupMapEntryBytes + int64(len(id)) + headReserveBytes
}

// partBytes is what one part with the given names keeps.
func partBytes(field string, filename *string) int64 {
	n := partStructBytes + partSlotBytes + int64(len(field))
	if filename != nil {
		n += stringHeaderBytes + int64(len(*filename))
	}
	return n
}

// docBytes is what a kept document takes.
func docBytes(d *statusDoc) int64 {
	return docStructBytes + int64(cap(d.head)+cap(d.files))
}

// memoryAccount is a tracker's count of the bytes it keeps.
type memoryAccount struct {
	live   atomic.Int64 // live records, their parts and documents
	store  atomic.Int64 // the finished store, as of its last change
	max    atomic.Int64 // max_memory
	budget atomic.Int64 // what it may keep of max_memory (keepBudget)
}

// keepBudget is the most a tracker with the given max_memory keeps:
// max_memory less the garbage collector's headroom over it.
func keepBudget(maxMemory int64) int64 {
	percent := gcPercent()
	if percent <= 0 { // GOGC=off: collected at the memory limit only
		return maxMemory
	}
	return maxMemory * 100 / (100 + percent)
}

// gcPercent is the process's GOGC (from the environment or
// debug.SetGCPercent): 100 unless set, -1 when off.
func gcPercent() int64 {
	sample := []runtimemetrics.Sample{{Name: "/gc/gogc:percent"}}
	runtimemetrics.Read(sample)
	if sample[0].Value.Kind() != runtimemetrics.KindUint64 {
		return 100
	}
	return int64(sample[0].Value.Uint64())
}

func (m *memoryAccount) used() int64 { return m.live.Load() + m.store.Load() }

// syncStore takes the finished store's size after it changed. The
// caller holds the tracker's lock.
func (m *memoryAccount) syncStore(s *finishedStore) { m.store.Store(s.bytes()) }

// setMaxMemory sets max_memory, and the budget it leaves: the handler
// provisioned last sets it.
func (t *tracker) setMaxMemory(n int64) {
	t.memory.max.Store(n)
	t.memory.budget.Store(keepBudget(n))
}

// fitMemory removes finished records, then reservations, until extra
// more bytes fit in the budget. It reports false if they cannot. The
// caller holds t.mu.
func (t *tracker) fitMemory(extra int64) bool {
	for t.memory.used()+extra > t.memory.budget.Load() {
		if !t.evictOne(evictMaxMemory) {
			return false
		}
	}
	return true
}

// charge counts n more bytes kept for a live record, making room if it
// must. It reports false, and counts nothing, when they do not fit. A
// nil tracker (an untracked upload) keeps nothing. Every count that
// grows is made under t.mu, after fitMemory, so none passes max_memory;
// counts that shrink need no lock.
func (t *tracker) charge(n int64) bool {
	if t == nil {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.fitMemory(n) {
		return false
	}
	t.memory.live.Add(n)
	return true
}

// uncharge counts n bytes less kept for a live record.
func (t *tracker) uncharge(n int64) {
	if t != nil {
		t.memory.live.Add(-n)
	}
}

// memoryInUse is the bytes the tracker keeps, read under its lock so
// that a record moving from live to finished is not counted twice.
func (t *tracker) memoryInUse() int64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.memory.used()
}
