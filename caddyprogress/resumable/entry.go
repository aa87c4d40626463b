package resumable

import (
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// entry is what this process knows about one upload beyond its record
// on disk: the live figures of its status, its tracker record, and
// whether a delivery of it is running here.
type entry struct {
	id string

	delivery  atomic.Pointer[string] // one of the delivery* constants
	attempts  atomic.Int32
	delivered atomic.Int64  // bytes sent to the backend by the latest attempt
	expiresAt atomic.Int64  // unix nanoseconds, 0 for none
	retryAt   atomic.Int64  // unix nanoseconds of the next delivery attempt, 0 for none
	requests  atomic.Int32  // requests for this upload in progress
	changes   atomic.Uint32 // counts changes of delivery, attempts and expiresAt, for Version

	// heldSince is when the upload last reserved the rest of its length
	// (unix nanoseconds; 0 unknown, -1 let go: see releaseHold in disk.go)
	heldSince atomic.Int64

	// guarded by the spool's mu
	tracked Record // nil until tracked
	// trackAgainAt is when a Track that failed (the ID claimed by an
	// earlier process whose lease has not ended, or by another instance;
	// a full tracker) may be tried again: zero until one fails
	trackAgainAt time.Time
	busy         bool  // a delivery runs or is scheduled in this process
	lease        Lease // its claim, while busy
}

func newEntry(id string, rec *deliveryRecord) *entry {
	e := &entry{id: id}
	e.setDelivery(rec.Delivery)
	e.setAttempts(rec.Attempts)
	return e
}

func (e *entry) setDelivery(state string) {
	e.delivery.Store(&state)
	e.changes.Add(1)
}

func (e *entry) setAttempts(n int) {
	e.attempts.Store(int32(n))
	e.changes.Add(1)
}

func (e *entry) deliveryState() string { return *e.delivery.Load() }

func (e *entry) setExpiry(at time.Time) {
	defer e.changes.Add(1)
	if at.IsZero() {
		e.expiresAt.Store(0)
		return
	}
	e.expiresAt.Store(at.UnixNano())
}

// Version changes whenever Status does.
func (e *entry) Version() Version {
	return Version{Changes: e.changes.Load(), Delivered: e.delivered.Load()}
}

// Status gives the resumable object of the upload's status; Offset is
// filled in by the tracker, which counts the bytes stored.
func (e *entry) Status() Status {
	s := Status{
		Delivered: e.delivered.Load(),
		Delivery:  e.deliveryState(),
		Attempts:  int(e.attempts.Load()),
	}
	if at := e.expiresAt.Load(); at != 0 {
		t := time.Unix(0, at).UTC()
		s.ExpiresAt = &t
	}
	return s
}

// retryAfter is the Retry-After value while a delivery is pending: the
// whole seconds until the next attempt, at least 1.
func (e *entry) retryAfter() string {
	wait := time.Until(time.Unix(0, e.retryAt.Load()))
	secs := max(int(wait.Seconds()+0.999), 1)
	return strconv.Itoa(secs)
}

// untracked stands in for a tracker record when the tracker refused
// one (it was full): the upload goes on, its bytes uncounted.
type untracked struct{}

func (untracked) CountBody(r *http.Request)          {}
func (untracked) Uploading()                         {}
func (untracked) Paused()                            {}
func (untracked) Delivering()                        {}
func (untracked) Stored(int64)                       {}
func (untracked) Finish(progress.State, int, string) {}
func (untracked) Announce(http.ResponseWriter)       {}

var (
	_ Progress = (*entry)(nil)
	_ Record   = untracked{}
)
