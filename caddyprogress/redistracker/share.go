package redistracker

import (
	"context"
	"sync/atomic"
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
	total   rate.Limit
	limiter *rate.Limiter
	demand  func() int

	// registered is the demand last registered in Redis: while it and
	// the demand are 0, a slice sends nothing (idle.go)
	registered atomic.Int64
}

// ShareRate shares total bytes per second among the instances of the
// tracker: every ShareSlice while this instance has demand (what demand
// returns: its uploads waiting on the shared bucket), it registers it
// and sets limiter's rate to its part of total in proportion to its
// demand, so that the instances' limiters add up to total. No read
// waits on Redis: reads wait on the local limiter only. When its demand
// falls to none, it registers that once and keeps the rate one more
// upload would then get; an instance without demand sends nothing (it
// asks demand, locally, every slice). The claim of its first upload
// registers its demand and takes its share in the claim's own round
// trip, before the upload's body is read; an upload that starts with no
// claim (one claimed earlier, resuming) is registered within a slice.
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

// currentShare is the share's settings, nil when not sharing.
func (t *Tracker) currentShare() *rateShare {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.share
}

// takeShare registers the demand and sets the limiter's rate, unless
// there is no demand and none is registered.
func (t *Tracker) takeShare(ctx context.Context) {
	s := t.currentShare()
	if s == nil {
		return
	}
	n := s.demand()
	if n == 0 && s.registered.Load() == 0 {
		return
	}
	var apply func()
	if _, err := t.pipeline(ctx, func(p redis.Pipeliner) {
		apply = t.demandCmd(ctx, p, s, n)
	}); err != nil {
		return
	}
	apply()
}

// idleShare returns the share and its demand when this instance has
// demand that it has not registered (its first upload since it was
// idle), for a claim's round trip to register it (claimer.go); nil
// otherwise.
func (t *Tracker) idleShare() (*rateShare, int) {
	s := t.currentShare()
	if s == nil || s.registered.Load() != 0 {
		return nil, 0
	}
	if n := s.demand(); n > 0 {
		return s, n
	}
	return nil, 0
}

// demandCmd queues the registration of demand n; the function it
// returns, called once the pipeline ran, sets the limiter's rate from
// its answer.
func (t *Tracker) demandCmd(ctx context.Context, p redis.Pipeliner, s *rateShare, n int) (apply func()) {
	all := demandScript.EvalSha(ctx, p, []string{t.keys.demand(), t.keys.demandCount()},
		t.cfg.Instance, n, demandTTL.Milliseconds())
	return func() {
		sum, err := all.Int64()
		if err != nil {
			return
		}
		s.registered.Store(int64(n))
		s.limiter.SetLimit(shareOf(s.total, int64(n), sum))
	}
}

// shareOf is an instance's part of total when its demand is mine out of
// all: proportional, or, without demand, what one more upload would get.
func shareOf(total rate.Limit, mine, all int64) rate.Limit {
	if mine <= 0 {
		return total / rate.Limit(all+1)
	}
	return total * rate.Limit(mine) / rate.Limit(max(all, mine))
}
