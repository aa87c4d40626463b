package redistracker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// healthEvery is how often the health loop pings Redis while it is
// marked down.
const healthEvery = 250 * time.Millisecond

// health is up or down, changed by failed round trips (down) and by the
// health loop's pings (up, and down too when asked). Each change is
// logged once.
type health struct {
	up atomic.Bool

	mu      sync.Mutex
	lastErr string
	since   time.Time
}

func (h *health) get() Health {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Health{Up: h.up.Load(), LastError: h.lastErr, Since: h.since}
}

// down marks Redis down; it reports whether it was up.
func (h *health) down(err error, log *zap.Logger) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastErr = err.Error()
	if !h.up.CompareAndSwap(true, false) {
		return false
	}
	h.since = time.Now()
	log.Warn("redis unreachable; uploads go on locally until it is back", zap.Error(err))
	return true
}

// markUp marks Redis up; it reports whether it was down.
func (h *health) markUp(log *zap.Logger) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.up.CompareAndSwap(false, true) {
		return false
	}
	h.since = time.Now()
	log.Info("redis is back; re-claiming and republishing the uploads in flight")
	return true
}

// healthLoop pings Redis while it is marked down, every healthEvery,
// and at once when a call on a request's path ran out of its Timeout
// (marking it down if the ping fails too). While Redis is up and no
// call asks, it sends nothing: the round trips of the other loops, and
// of the requests, notice a failure (idle.go). When Redis answers again
// after being down, the scripts are loaded again and every upload of
// this instance is re-claimed and republished.
func (t *Tracker) healthLoop() {
	ticker := time.NewTicker(healthEvery)
	defer ticker.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-ticker.C:
			if t.health.up.Load() {
				continue
			}
		case <-t.checkHealth: // a call on a request's path timed out
		}
		ctx, cancel := context.WithTimeout(context.Background(), backgroundTimeout)
		t.stats.roundTrips.Add(1)
		err := t.client.Ping(ctx).Err()
		if err != nil {
			cancel()
			t.failed(err)
			continue
		}
		if !t.health.up.Load() {
			if err := t.loadScripts(ctx); err != nil {
				cancel()
				continue
			}
		}
		cancel()
		if t.health.markUp(t.log) {
			t.reclaimAll()
		}
	}
}
