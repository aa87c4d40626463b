package redistracker

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
)

// ShareSlice is how often each instance registers its demand for the
// shared bandwidth and takes its share: the time a change of demand
// (an upload starting or ending anywhere) takes to be reflected.
const ShareSlice = 100 * time.Millisecond

// demandTTL is how long an instance's demand counts without renewal.
const demandTTL = 3 * ShareSlice

// rateShare is the tracker's part of a cluster-wide rate_limit_total.
type rateShare struct {
	mu      sync.Mutex
	total   rate.Limit
	limiter *rate.Limiter
	demand  func() int
}

// ShareRate shares total bytes per second among the instances of the
// tracker: every ShareSlice, this instance registers its demand (what
// demand returns: its uploads waiting on the shared bucket) and sets
// limiter's rate to its part of total in proportion to its demand, so
// that the instances' limiters add up to total. No read waits on Redis:
// reads wait on the local limiter only. An instance without demand
// keeps the rate one upload would get, ready for its next upload.
// While Redis is down each instance keeps its last share. Calling it
// again (a reload) replaces the settings; a total of 0 stops sharing.
func (t *Tracker) ShareRate(total rate.Limit, limiter *rate.Limiter, demand func() int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if total <= 0 || limiter == nil || demand == nil {
		t.share = nil
		return
	}
	t.share = &rateShare{total: total, limiter: limiter, demand: demand}
}

func (t *Tracker) shareLoop() {
	t.every(ShareSlice, t.takeShare)
}

// takeShare registers the demand and sets the limiter's rate.
func (t *Tracker) takeShare(ctx context.Context) {
	t.mu.Lock()
	s := t.share
	t.mu.Unlock()
	if s == nil {
		return
	}
	n := s.demand()
	var all *redis.Cmd
	if _, err := t.pipeline(ctx, func(p redis.Pipeliner) {
		all = demandScript.EvalSha(ctx, p, []string{t.keys.demand(), t.keys.demandCount()},
			t.cfg.Instance, n, demandTTL.Milliseconds())
	}); err != nil {
		return
	}
	sum, err := all.Int64()
	if err != nil {
		return
	}
	s.limiter.SetLimit(shareOf(s.total, int64(n), sum))
}

// shareOf is an instance's part of total when its demand is mine out of
// all: proportional, or, without demand, what one more upload would get.
func shareOf(total rate.Limit, mine, all int64) rate.Limit {
	if mine <= 0 {
		return total / rate.Limit(all+1)
	}
	return total * rate.Limit(mine) / rate.Limit(max(all, mine))
}
