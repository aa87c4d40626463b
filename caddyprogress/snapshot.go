package caddyprogress

import (
	"math"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/resumable"
)

// Status is the JSON document that describes one upload, served by the
// status route and carried by every event:
//
//	{"id": "...", "status": "uploading", "received": 1048576, "total": 5242880,
//	 "percent": 20, "speed": 524288, "elapsed": 2.0, "remaining": 8.0,
//	 "started_at": "...", "updated_at": "...", "finished_at": null,
//	 "upstream_status": null, "rate_limit": null}
type Status struct {
	ID     string `json:"id"`
	Status string `json:"status"`

	// Received counts the bytes actually read from the client so far.
	Received int64 `json:"received"`
	// Total is the Content-Length, or null when the body has none.
	Total *int64 `json:"total"`
	// Percent is received/total as a whole number, or null without a total.
	Percent *int64 `json:"percent"`
	// Speed is in bytes per second over the last few seconds; once the
	// body has ended, the average over the whole body.
	Speed int64 `json:"speed"`
	// Elapsed is the number of seconds since the upload started (until it
	// finished, once it has).
	Elapsed float64 `json:"elapsed"`
	// Remaining is the estimated number of seconds until the body ends,
	// or null when it cannot be told.
	Remaining *float64 `json:"remaining"`

	StartedAt  time.Time  `json:"started_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	FinishedAt *time.Time `json:"finished_at"`

	// UpstreamStatus is the status code of the answer, once there is one
	// (from the upstream or from Caddy itself, e.g. 413 or 502).
	UpstreamStatus *int `json:"upstream_status"`
	// Error says what went wrong, for the error and aborted states.
	Error string `json:"error,omitempty"`
	// RateLimit is this upload's own bandwidth limit in bytes per second,
	// or null when it has none.
	RateLimit *int64 `json:"rate_limit"`

	// Resumable describes a resumable upload's storage and delivery
	// (see resumable.go); left out for other uploads.
	Resumable *resumable.Status `json:"resumable,omitempty"`

	// FilesTruncated is true in a document read through Redis that left
	// its files out: the whole document took more than the 64 KiB an
	// instance shares of an upload (shareddoc.go), or max_memory had no
	// room to encode it when it was sent. The instance that runs the
	// upload serves its files. Left out otherwise.
	FilesTruncated bool `json:"files_truncated,omitempty"`

	// Files are the parts of a multipart/form-data upload, in order;
	// left out for other uploads, and for a body that is not usable
	// multipart (see multipart.go).
	Files []FileStatus `json:"files,omitempty"`
}

// snapshot describes the upload as it is at now, its files included.
// A final upload's is always the same.
func (u *upload) snapshot(now time.Time) Status {
	if st := u.currentState(); st.final() {
		return u.finalStatus(st)
	}
	files := u.files() // before received, so the parts never add up to more
	s := u.liveStatus(now)
	if s.FinishedAt == nil { // else it ended meanwhile, and has its final files
		s.Files = files
	}
	return s
}

// liveStatus describes an upload that had not ended when it was called
// (it may have since), without its files.
func (u *upload) liveStatus(now time.Time) Status {
	st := u.currentState()
	received := u.received.Load()
	bodyEnd := time.Duration(u.bodyEnd.Load())
	s := u.baseStatus(st, received)
	s.UpdatedAt = u.startedAt.Add(time.Duration(u.lastRead.Load())).UTC()
	if st.final() {
		return u.finalStatus(st)
	}

	u.mu.Lock()
	defer u.mu.Unlock()
	elapsed := now.Sub(u.startedAt)
	s.Elapsed = roundSeconds(elapsed)
	switch {
	case st == statePending:
		s.UpdatedAt = s.StartedAt
	case bodyEnd > 0:
		// the body has ended: report its average speed
		s.Speed = int64(float64(received) / bodyEnd.Seconds())
		if s.Total != nil {
			zero := 0.0
			s.Remaining = &zero
		}
	default:
		s.Speed = u.speed.observe(elapsed, received)
		if s.Total != nil && s.Speed > 0 {
			remaining := roundSeconds(time.Duration(float64(max(u.total-received, 0)) / float64(s.Speed) * float64(time.Second)))
			s.Remaining = &remaining
		}
	}
	return s
}

// finalStatus describes an upload that ended in st, its files included,
// from the fields finish fixed: the caller is finish, or has seen the
// final state.
func (u *upload) finalStatus(st state) Status {
	s := u.baseStatus(st, u.finalReceived)
	finished := u.finishedAt.UTC()
	s.FinishedAt = &finished
	s.UpdatedAt = finished
	s.Error = u.errMsg
	if u.upstreamStatus != 0 {
		code := u.upstreamStatus
		s.UpstreamStatus = &code
	}
	s.Elapsed = roundSeconds(u.finishedAt.Sub(u.startedAt))
	if bodyEnd := time.Duration(u.bodyEnd.Load()); bodyEnd > 0 {
		s.Speed = int64(float64(u.finalReceived) / bodyEnd.Seconds())
	}
	if s.Total != nil {
		zero := 0.0
		s.Remaining = &zero
	}
	s.Files = u.finalFiles
	return s
}

// baseStatus holds what every status of the upload shows the same way.
func (u *upload) baseStatus(st state, received int64) Status {
	s := Status{
		ID:        u.id,
		Status:    st.String(),
		Received:  received,
		StartedAt: u.startedAt.UTC(),
		Resumable: u.resumableStatus(received),
	}
	if u.total >= 0 {
		total := u.total
		s.Total = &total
		percent := int64(100)
		if total > 0 {
			percent = min(received*100/total, 100)
		}
		s.Percent = &percent
	}
	if u.rateLimit > 0 {
		limit := u.rateLimit
		s.RateLimit = &limit
	}
	return s
}

// roundSeconds gives d in seconds, to the millisecond.
func roundSeconds(d time.Duration) float64 {
	return math.Round(d.Seconds()*1000) / 1000
}
