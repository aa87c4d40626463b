package resumable

import (
	"fmt"
	"net/http"
	"runtime/debug"
	"time"

	"go.uber.org/zap"
)

// scheduleDelivery runs a delivery of e in the background after wait,
// through the route of the handler that accepted the upload (waiting
// for a request to bring it, after a restart or a reload). The caller
// has claimed e; the claim ends with the delivery, or when the spool
// stops.
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
	rec, err := readRecord(sp.store, e.id)
	if err != nil {
		sp.wg.Done()
		sp.release(e)
		return
	}
	key := rec.route()
	sp.needRoute(key, 1) // from now on, a request with this key leaves its route
	go func() {
		defer sp.wg.Done()
		defer sp.needRoute(key, -1)
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-sp.ctx.Done():
			sp.release(e)
			return
		}
		rt := sp.awaitRoute(key)
		if rt == nil {
			sp.release(e)
			return
		}
		rt.srv.redeliverSafely(rt, e)
	}()
}

// redeliverSafely is redeliver in a goroutine of this package: a panic
// (the next handler's are caught in attempt; this is for any other) is
// logged once with its stack and counted as a transient failure of the
// attempt, so the claim is released and the next retry scheduled, or
// the delivery failed once the retries are spent.
func (s *Server) redeliverSafely(rt *route, e *entry) {
	defer func() {
		if v := recover(); v != nil {
			s.logger.Error("background delivery panicked", zap.String("id", e.id),
				zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
			s.settleAfterPanic(e, v)
		}
	}()
	s.redeliver(rt, e)
}

// settleAfterPanic records a delivery attempt that panicked outside the
// next handler as a transient failure. A second panic here only
// releases the claim: the record stays "delivering", and the sweeper
// starts it again.
func (s *Server) settleAfterPanic(e *entry, v any) {
	defer func() {
		if v := recover(); v != nil {
			s.logger.Error("settling a delivery that panicked", zap.String("id", e.id),
				zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
			s.spool.release(e)
		}
	}()
	rec, err := readRecord(s.spool.store, e.id)
	if err != nil || rec.Delivery != deliveryDelivering {
		s.spool.release(e)
		return
	}
	_, _ = s.settle(e, rec, failure(http.StatusBadGateway, fmt.Errorf("%w: %v", errAnswerBroke, v), true))
}

// sweepSafely is one sweep of the folder (expire.go) in the sweeper's
// goroutine: a panic is logged once with its stack, and the next sweep
// runs as planned.
func (sp *spool) sweepSafely(s *Server, now time.Time) {
	defer func() {
		if v := recover(); v != nil {
			s.logger.Error("sweeping the upload folder panicked",
				zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
		}
	}()
	sp.sweep(s, now)
}
