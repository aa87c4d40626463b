package resumable

import (
	"context"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/tus/tusd/v2/pkg/handler"
	"go.uber.org/zap"
)

// track returns the upload's tracker record, tracking it first if this
// process has not yet (a new upload, or one from before a restart).
func (s *Server) track(e *entry, rec *deliveryRecord) Record {
	return s.trackInfo(e, rec, nil, false)
}

// trackAgainEvery is the least time between two tries to track an upload
// whose Track failed.
const trackAgainEvery = time.Second

// trackInfo is track with tusd's info of the upload, when it is known
// (at creation, before tusd stores it); nil reads it. A Track that
// fails (the ID still claimed across the instances by the process this
// one replaced, until its lease ends; or by another instance that
// tracks it; a full tracker) leaves the upload untracked for this
// request only: it is tried again at a later request or sweep, at most
// once every trackAgainEvery (now: at once, for an upload that ends), so
// that its progress shows again once the claim is free.
func (s *Server) trackInfo(e *entry, rec *deliveryRecord, info *handler.FileInfo, now bool) Record {
	s.spool.mu.Lock()
	defer s.spool.mu.Unlock()
	if e.tracked != nil {
		return e.tracked
	}
	var tracked Record = untracked{}
	if now || !time.Now().Before(e.trackAgainAt) {
		tracked = s.trackNow(e, rec, info)
	}
	if e.deliveryState() == deliveryReceiving {
		tracked.Paused()
		if e.expiresAt.Load() == 0 {
			e.setExpiry(s.lastByte(rec).Add(s.cfg.expire()))
		}
	}
	return tracked
}

// trackNow asks the tracker to track the upload, under the spool's lock.
func (s *Server) trackNow(e *entry, rec *deliveryRecord, info *handler.FileInfo) Record {
	if info == nil {
		if stored, err := s.uploadInfo(context.Background(), e.id); err == nil {
			info = &stored
		}
	}
	total, stored := int64(-1), int64(0)
	switch {
	case info != nil:
		stored = info.Offset
		if !info.SizeIsDeferred {
			total = info.Size
		}
	case rec.Delivery != deliveryReceiving:
		// every byte was stored (Size is set when the delivery begins),
		// and the bytes may be gone from the store by now (delivered)
		total, stored = rec.Size, rec.Size
	}
	tracked, err := s.opts.Tracker.Track(e.id, rec.Group, total, stored, e)
	if err != nil {
		s.logger.Debug("upload not tracked for now", zap.String("id", e.id), zap.Error(err))
		e.trackAgainAt = time.Now().Add(trackAgainEvery)
		return untracked{}
	}
	e.tracked = tracked
	return tracked
}

// retrackFailed tries again to track an upload whose Track failed (see
// trackInfo), from a sweep: its progress shows again without waiting for
// its client.
func (s *Server) retrackFailed(e *entry, rec *deliveryRecord) {
	s.spool.mu.Lock()
	failed := e.tracked == nil && !e.trackAgainAt.IsZero()
	s.spool.mu.Unlock()
	if failed {
		s.track(e, rec)
	}
}

// lastByte is when the upload last got a byte: the last write to its
// bytes in the store, or its creation.
func (s *Server) lastByte(rec *deliveryRecord) time.Time {
	if at, err := s.spool.store.LastWrite(context.Background(), rec.ID); err == nil && at.After(rec.Created) {
		return at
	}
	return rec.Created
}

// uploadInfo reads tusd's info of upload id.
func (s *Server) uploadInfo(ctx context.Context, id string) (handler.FileInfo, error) {
	up, err := s.data.GetUpload(ctx, id)
	if err != nil {
		return handler.FileInfo{}, err
	}
	return up.GetInfo(ctx)
}

// ended finishes an upload's tracker record (tracking it first if need be).
func (s *Server) ended(e *entry, rec *deliveryRecord, st progress.State, status int, msg string) {
	if e == nil {
		return
	}
	s.spool.mu.Lock()
	tracked := e.tracked
	s.spool.mu.Unlock()
	if tracked == nil {
		tracked = s.trackInfo(e, rec, nil, true)
	}
	tracked.Finish(st, status, msg)
	s.spool.forget(e.id)
}
