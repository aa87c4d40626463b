package resumable

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/tus/tusd/v2/pkg/handler"
	"go.uber.org/zap"
)

// track returns the upload's tracker record, tracking it first if this
// process has not yet (a new upload, or one from before a restart).
func (s *Server) track(e *entry, rec *deliveryRecord) Record {
	return s.trackInfo(e, rec, nil)
}

// trackInfo is track with tusd's info of the upload, when it is known
// (at creation, before tusd stores it); nil reads it.
func (s *Server) trackInfo(e *entry, rec *deliveryRecord, info *handler.FileInfo) Record {
	s.spool.mu.Lock()
	defer s.spool.mu.Unlock()
	if e.tracked != nil {
		return e.tracked
	}
	if info == nil {
		if stored, err := s.uploadInfo(context.Background(), e.id); err == nil {
			info = &stored
		}
	}
	total, stored := int64(-1), int64(0)
	if info != nil {
		stored = info.Offset
		if !info.SizeIsDeferred {
			total = info.Size
		}
	}
	tracked, err := s.opts.Tracker.Track(e.id, rec.Group, total, stored, e)
	if err != nil {
		s.logger.Debug("upload not tracked", zap.String("id", e.id), zap.Error(err))
		tracked = untracked{}
	}
	e.tracked = tracked
	if e.deliveryState() == deliveryReceiving {
		tracked.Paused()
		if e.expiresAt.Load() == 0 {
			e.setExpiry(s.lastByte(rec).Add(s.cfg.expire()))
		}
	}
	return tracked
}

// lastByte is when the upload last got a byte: its data file's time,
// or its creation.
func (s *Server) lastByte(rec *deliveryRecord) time.Time {
	if fi, err := os.Stat(filepath.Join(s.cfg.Dir, rec.ID)); err == nil && fi.ModTime().After(rec.Created) {
		return fi.ModTime()
	}
	return rec.Created
}

// uploadInfo reads tusd's info of upload id.
func (s *Server) uploadInfo(ctx context.Context, id string) (handler.FileInfo, error) {
	up, err := s.store.GetUpload(ctx, id)
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
		tracked = s.track(e, rec)
	}
	tracked.Finish(st, status, msg)
	s.spool.forget(e.id)
}
