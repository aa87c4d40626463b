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

	// Files are the parts of a multipart/form-data upload, in order;
	// left out for other uploads, and for a body that is not usable
	// multipart (see multipart.go).
	Files []FileStatus `json:"files,omitempty"`

	// Resumable describes a resumable upload's storage and delivery
	// (see resumable.go); left out for other uploads.
	Resumable *resumable.Status `json:"resumable,omitempty"`
}

// snapshot describes the upload as it is at now.
func (u *upload) snapshot(now time.Time) Status {
	// Read the state first: a final state guarantees the fields written
	// by finish are complete, and received never grows after the body ends.
	st := u.currentState()
	files := u.files() // before received, so the parts never add up to more
	received := u.received.Load()
	bodyEnd := time.Duration(u.bodyEnd.Load())

	s := Status{
		ID:        u.id,
		Status:    st.String(),
		Received:  received,
		StartedAt: u.startedAt.UTC(),
		UpdatedAt: u.startedAt.Add(time.Duration(u.lastRead.Load())).UTC(),
		Files:     files,
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

	u.mu.Lock()
	defer u.mu.Unlock()
	if st.final() {
		finished := u.finishedAt.UTC()
		s.FinishedAt = &finished
		s.UpdatedAt = finished
		s.Error = u.errMsg
		if u.upstreamStatus != 0 {
			code := u.upstreamStatus
			s.UpstreamStatus = &code
		}
		now = u.finishedAt
	}
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

// roundSeconds gives d in seconds, to the millisecond.
func roundSeconds(d time.Duration) float64 {
	return math.Round(d.Seconds()*1000) / 1000
}
