package resumable

import (
	"errors"
	"fmt"
	"net/http"
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
	ids, err := recordIDs(sp.store)
	if err != nil {
		s.logger.Error("scanning the upload folder", zap.Error(err))
		return
	}
	for _, id := range ids {
		rec, err := readRecord(sp.store, id)
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
	ids, err := recordIDs(sp.store)
	if err != nil {
		if sp.sweepLog.Allow() {
			s.logger.Error("scanning the upload store", zap.Error(err))
		}
		return
	}
	expire := s.cfg.expire()
	seen := make(map[string]bool, len(ids))
	defer func() { sp.goneElsewhere(s, seen) }()
	for _, id := range ids {
		seen[id] = true
		rec, err := readRecord(sp.store, id)
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
				sp.syncStored(s, e)
				s.retrackFailed(e, rec)
				continue
			}
			if sp.lockedElsewhere(s, id) {
				continue // a request on another instance holds it
			}
			s.track(e, rec) // before its files go: the record shows what was stored
			if err := removeUpload(sp.store, id); err != nil {
				s.logger.Error("removing an expired upload", zap.String("id", id), zap.Error(err))
			}
			s.ended(e, rec, progress.StateAborted, 0, "expired: no byte arrived for "+expire.String())
			sp.forget(id)
		case deliveryDelivering:
			e := sp.entry(rec)
			switch err := sp.claim(e); {
			case err == nil: // not running here, nor on another instance
				s.track(e, rec).Delivering()
				sp.scheduleDelivery(e, 0)
			case errors.Is(err, ErrClaimed):
				sp.deliveringElsewhere(e, rec)
			}
		case deliveryFailed, deliveryDelivered:
			sp.endedElsewhere(s, rec)
			if now.After(rec.Finished.Add(expire)) {
				if err := removeUpload(sp.store, id); err != nil {
					s.logger.Error("removing an ended upload", zap.String("id", id), zap.Error(err))
				}
				sp.forget(id)
			}
		}
	}
	sp.pruneReservations(seen)
}

// lockedElsewhere reports whether a request for upload id holds its
// lock on another instance sharing the folder (or whether that cannot be
// told: then the upload is left for a later sweep).
func (sp *spool) lockedElsewhere(s *Server, id string) bool {
	locked, err := sp.coord.Locked(sp.ctx, id)
	if err != nil {
		s.logger.Debug("cannot tell whether an upload is locked; not expiring it now", zap.String("id", id), zap.Error(err))
		return true
	}
	return locked
}

// endedElsewhere ends the tracker record of an upload this process
// tracks whose delivery ended on another instance sharing the folder:
// it shows complete or error here too, not paused or delivering.
func (sp *spool) endedElsewhere(s *Server, rec *deliveryRecord) {
	sp.mu.Lock()
	e := sp.entries[rec.ID]
	sp.mu.Unlock()
	if e == nil || e.deliveryState() == rec.Delivery || e.requests.Load() > 0 {
		return
	}
	e.setDelivery(rec.Delivery)
	if !sp.isTracked(e) {
		sp.forget(rec.ID)
		return
	}
	sp.mu.Lock()
	tracked := e.tracked
	sp.mu.Unlock()
	tracked.Stored(rec.Size) // every byte was stored (Size is set when the delivery begins)
	status, msg, st := 0, "", progress.StateComplete
	if rec.Answer != nil {
		status = rec.Answer.Status
	}
	if rec.Delivery == deliveryFailed {
		st, msg = progress.StateError, fmt.Sprintf("the backend answered %d %s", status, http.StatusText(status))
	}
	s.ended(e, rec, st, status, msg)
}

// deliveringElsewhere marks an upload this process tracks as
// delivering while another instance sharing the folder delivers it.
func (sp *spool) deliveringElsewhere(e *entry, rec *deliveryRecord) {
	sp.mu.Lock()
	tracked := e.tracked
	sp.mu.Unlock()
	if tracked == nil || e.deliveryState() == deliveryDelivering {
		return
	}
	e.setDelivery(deliveryDelivering)
	e.setExpiry(time.Time{})
	tracked.Stored(rec.Size) // every byte is stored
	tracked.Delivering()
}

// goneElsewhere ends the entries of uploads whose records are gone
// from the folder (seen lists those still there): removed by another
// instance sharing it, expired or terminated there. A tracker record
// of one ends aborted here too.
func (sp *spool) goneElsewhere(s *Server, seen map[string]bool) {
	sp.mu.Lock()
	var gone []*entry
	for id, e := range sp.entries {
		if !seen[id] && e.requests.Load() == 0 && !e.busy {
			gone = append(gone, e)
		}
	}
	sp.mu.Unlock()
	for _, e := range gone {
		if _, err := readRecord(sp.store, e.id); !errors.Is(err, os.ErrNotExist) {
			continue // made since the store was listed (or it cannot be told now)
		}
		if sp.isTracked(e) {
			s.ended(e, &deliveryRecord{ID: e.id}, progress.StateAborted, 0, "expired or terminated")
		}
		sp.forget(e.id)
	}
}

// isTracked reports whether e has a tracker record in this process.
func (sp *spool) isTracked(e *entry) bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return e.tracked != nil
}

// syncStored raises the received bytes of an upload this process
// tracks to what is stored: bytes stored through another instance
// sharing the folder show here at the next sweep (with the local
// Coordinator, the stored offset is what this process counted already).
func (sp *spool) syncStored(s *Server, e *entry) {
	sp.mu.Lock()
	tracked := e.tracked
	sp.mu.Unlock()
	if tracked == nil {
		return
	}
	if info, err := s.uploadInfo(sp.ctx, e.id); err == nil {
		tracked.Stored(info.Offset)
	}
}

// inRequest reports whether a request for upload id is in progress.
func (sp *spool) inRequest(id string) bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	e, ok := sp.entries[id]
	return ok && e.requests.Load() > 0
}
