package caddyprogress

import (
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"sync"
	"sync/atomic"
	"time"
)

// state is where an upload is in its life (progress.State).
type state = progress.State

// upload is one tracked upload (or a reservation of an ID): the record
// a tracker keeps, read by the status and events routes.
//
// The fields the body's Read touches (received, lastRead, state) are
// atomics, so the upload's hot path takes no lock. Everything else is
// written once when the upload ends, under mu, before done is closed.
type upload struct {
	id        string
	total     int64 // the Content-Length, or -1 when the body has none
	startedAt time.Time
	rateLimit int64 // bytes per second for this upload, or 0 for none

	received  atomic.Int64
	lastRead  atomic.Int64 // nanoseconds after startedAt of the last read that returned bytes
	bodyEnd   atomic.Int64 // nanoseconds after startedAt when the body ended, or 0
	throttled atomic.Int64 // nanoseconds spent waiting for bandwidth
	state     atomic.Int32

	// parts is set for a multipart/form-data upload (see multipart.go).
	parts atomic.Pointer[partList]

	// resumable is set for a resumable upload (see resumable.go).
	resumable atomic.Pointer[resumableUpload]

	// done is closed when the upload reaches a final state.
	done chan struct{}

	// liveDoc is the latest encoding of the upload's status while it is
	// in flight, made by the first reader after a change under encodeMu;
	// liveHead the latest one without files, for groups (memberDoc),
	// counted with the record; finalDoc is the one encoding once it has
	// ended (encoding.go).
	liveDoc  atomic.Pointer[statusDoc]
	liveHead atomic.Pointer[statusDoc]
	finalDoc atomic.Pointer[statusDoc]
	encodeMu sync.Mutex

	// finalReceived and finalFiles are received and the parts when the
	// upload ended, written before the final state is stored: a read
	// still under way when the upload ended is not shown, so a final
	// record never changes.
	finalReceived int64
	finalFiles    []FileStatus

	mu             sync.Mutex
	finishedAt     time.Time
	upstreamStatus int    // 0 when there is none
	errMsg         string // why it ended in error or aborted
	speed          speedWindow

	// tracker is the tracker that keeps the record and counts its memory;
	// nil for an untracked upload. withoutFiles is set when max_memory
	// left no room for a multipart upload's parts.
	tracker      *tracker
	withoutFiles bool
	released     atomic.Bool // the tracker let go of the record

	// shared is the upload's claim across the cluster, with redis
	// (sharedtracker.go); nil without.
	shared atomic.Pointer[sharedHandle]

	// tracker bookkeeping, guarded by the tracker's lock
	expiresAt    time.Time // when a reservation is removed
	retiredIndex int       // position in the tracker's reservations heap, -1 when not in it
	bytesCounted bool      // received was added to the tracker's countedBytes
	group        *group    // the group the upload is a member of, or nil
}

func newUpload(id string, total int64, now time.Time, st state) *upload {
	u := &upload{
		id:           id,
		total:        total,
		startedAt:    now,
		done:         make(chan struct{}),
		retiredIndex: -1,
	}
	u.state.Store(int32(st))
	return u
}

func (u *upload) currentState() state { return state(u.state.Load()) }

// addReceived counts n more bytes read from the client. It is called on
// every Read of the body, so it uses atomics only.
func (u *upload) addReceived(n int) {
	total := u.received.Add(int64(n))
	since := int64(time.Since(u.startedAt))
	u.lastRead.Store(since)
	if u.total >= 0 && total >= u.total {
		u.markBodyEnded(since)
	}
}

// allReceived reports whether the declared length has been received.
func (u *upload) allReceived() bool {
	return u.total >= 0 && u.received.Load() >= u.total
}

// markBodyEnded moves an uploading upload to processing: the whole body
// has been read and the upstream's answer is awaited.
func (u *upload) markBodyEnded(since int64) {
	if u.resumable.Load() != nil && !u.allReceived() {
		return // one request of a resumable upload ended, not its body
	}
	if u.state.CompareAndSwap(int32(progress.StateUploading), int32(u.bodyEndedState())) {
		u.bodyEnd.Store(since)
	}
}

// releaseMemory drops what the live record keeps besides itself (its
// parts and its shared document) and returns the bytes it counted for
// them. The tracker calls it when it lets go of the record.
func (u *upload) releaseMemory() int64 {
	u.released.Store(true)
	var n int64
	if l := u.parts.Load(); l != nil {
		n += l.release()
	}
	if d := u.liveDoc.Swap(nil); d != nil {
		n += docBytes(d)
	}
	u.liveHead.Store(nil)
	return n
}

// finish records how the upload ended and wakes everyone waiting on it.
// Only the first call has an effect.
func (u *upload) finish(st state, upstreamStatus int, errMsg string, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.currentState().Final() {
		return false
	}
	if u.bodyEnd.Load() == 0 {
		u.bodyEnd.Store(max(int64(now.Sub(u.startedAt)), 1))
	}
	u.finalFiles = u.files() // before received, so the parts never add up to more
	u.finalReceived = u.received.Load()
	u.finishedAt = now
	u.upstreamStatus = upstreamStatus
	u.errMsg = errMsg
	// the final document before the final state: whoever sees the state
	// finds the document
	u.finalDoc.Store(encodeDoc(u.finalStatus(st), u.startedAt, u.bodyEnd.Load()))
	u.state.Store(int32(st))
	if d := u.liveDoc.Swap(nil); d != nil {
		u.tracker.uncharge(docBytes(d))
	}
	u.liveHead.Store(nil)
	close(u.done)
	return true
}
