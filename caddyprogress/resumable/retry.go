package resumable

import "time"

// scheduleDelivery runs a delivery of e in the background after wait,
// through the latest route (waiting for a request to bring one, after a
// restart or a reload). The caller has claimed e; the claim ends with
// the delivery, or when the spool stops.
func (sp *spool) scheduleDelivery(e *entry, wait time.Duration) {
	e.retryAt.Store(time.Now().Add(wait).UnixNano())
	sp.mu.Lock()
	if sp.ctx.Err() != nil {
		sp.mu.Unlock()
		sp.release(e)
		return
	}
	sp.wg.Add(1)
	sp.mu.Unlock()
	go func() {
		defer sp.wg.Done()
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-sp.ctx.Done():
			sp.release(e)
			return
		}
		rt := sp.awaitRoute()
		if rt == nil {
			sp.release(e)
			return
		}
		rt.srv.redeliver(rt, e)
	}()
}
