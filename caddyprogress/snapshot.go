package caddyprogress

import (
	"math"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
)

// Status is the JSON document that describes one upload (see
// progress.Status).
type Status = progress.Status

// snapshot describes the upload as it is at now, its files included.
// A final upload's is always the same.
func (u *upload) snapshot(now time.Time) Status {
	if st := u.currentState(); st.Final() {
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
	if st.Final() {
		return u.finalStatus(st)
	}

	u.mu.Lock()
	defer u.mu.Unlock()
	elapsed := now.Sub(u.startedAt)
	s.Elapsed = roundSeconds(elapsed)
	switch {
	case st == progress.StatePending:
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
