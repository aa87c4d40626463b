package resumable

import (
	"errors"
	"os"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"go.uber.org/zap"
)

// Sweeps run every tenth of expire or reserve_for, whichever is
// shorter, within these bounds.
const (
	minSweepEvery = 50 * time.Millisecond
	maxSweepEvery = time.Minute
)

// start makes s the spool's current Server and, the first time, counts
// the disk the uploads already there take and starts the sweeper.
func (sp *spool) start(s *Server) {
	sp.current.Store(s)
	sp.started.Do(func() {
		sp.countDisk(s)
		sp.wg.Add(1)
		go sp.sweepLoop()
	})
}

// countDisk reserves, for every upload found in the folder that is
// still receiving, delivering or failed, its length (or, while it is
// deferred, what is stored), and tracks each one still receiving as
// paused at its stored offset, so that its progress is known from the
// start and not only once its client comes back.
func (sp *spool) countDisk(s *Server) {
	ids, err := recordIDs(sp.dir)
	if err != nil {
		s.logger.Error("scanning the upload folder", zap.Error(err))
		return
	}
	for _, id := range ids {
		rec, err := readRecord(sp.dir, id)
		if err != nil || rec.Delivery == deliveryDelivered {
			continue
		}
		if info, err := s.uploadInfo(sp.ctx, id); err == nil {
			size := info.Size
			if info.SizeIsDeferred {
				size = info.Offset
			}
			_ = sp.reserve(id, size, 0)
		}
		if rec.Delivery == deliveryReceiving {
			s.track(sp.entry(rec), rec)
		}
	}
}

// sweepLoop sweeps at once, then every tenth of expire or reserve_for,
// until the spool stops.
func (sp *spool) sweepLoop() {
	defer sp.wg.Done()
	for {
		s := sp.current.Load()
		sp.sweepSafely(s, time.Now())
		select {
		case <-time.After(sp.sweepEvery()):
		case <-sp.ctx.Done():
			return
		}
	}
}

// sweepEvery is the time between two sweeps.
func (sp *spool) sweepEvery() time.Duration {
	s := sp.current.Load()
	return min(max(min(s.cfg.expire(), s.cfg.reserveFor())/10, minSweepEvery), maxSweepEvery)
}

// sweep removes what expired: uploads without a byte for expire, failed
// deliveries expire after they failed, and the records of delivered
// uploads expire after delivery; idle uploads let go of the room they
// reserved for bytes not sent after reserve_for (disk.go). It also
// starts the deliveries found "delivering" that no one runs, here or
// (with a Coordinator over Redis) on another instance sharing the
// folder: those cut short by a restart, or whose instance died and
// whose claim's lease ended.
func (sp *spool) sweep(s *Server, now time.Time) {
	ids, err := recordIDs(sp.dir)
	if err != nil {
		s.logger.Error("scanning the upload folder", zap.Error(err))
		return
	}
	expire := s.cfg.expire()
	for _, id := range ids {
		rec, err := readRecord(sp.dir, id)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				s.logger.Error("reading delivery record", zap.String("id", id), zap.Error(err))
			}
			continue
		}
		switch rec.Delivery {
		case deliveryReceiving:
			if sp.inRequest(id) {
				continue
			}
			e := sp.entry(rec)
			if now.Before(s.lastByte(rec).Add(expire)) {
				s.releaseHold(e, rec, now)
				continue
			}
			s.track(e, rec) // before its files go: the record shows what was stored
			if err := removeUpload(sp.dir, id); err != nil {
				s.logger.Error("removing an expired upload", zap.String("id", id), zap.Error(err))
			}
			s.ended(e, rec, progress.StateAborted, 0, "expired: no byte arrived for "+expire.String())
			sp.forget(id)
		case deliveryDelivering:
			e := sp.entry(rec)
			if sp.claim(e) == nil { // not here, nor on another instance
				s.track(e, rec).Delivering()
				sp.scheduleDelivery(e, 0)
			}
		case deliveryFailed, deliveryDelivered:
			if now.After(rec.Finished.Add(expire)) {
				if err := removeUpload(sp.dir, id); err != nil {
					s.logger.Error("removing an ended upload", zap.String("id", id), zap.Error(err))
				}
				sp.forget(id)
			}
		}
	}
}

// inRequest reports whether a request for upload id is in progress.
func (sp *spool) inRequest(id string) bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	e, ok := sp.entries[id]
	return ok && e.requests.Load() > 0
}
