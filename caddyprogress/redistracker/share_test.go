package redistracker

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
	"golang.org/x/time/rate"
)

func TestShareOf(t *testing.T) {
	for _, c := range []struct {
		mine, all int64
		want      rate.Limit
	}{
		{1, 4, 250}, {3, 4, 750}, {2, 2, 1000}, {0, 3, 250}, {0, 0, 1000}, {2, 1, 1000},
	} {
		if got := shareOf(1000, c.mine, c.all); got != c.want {
			t.Errorf("shareOf(1000, %d, %d) = %v, want %v", c.mine, c.all, got, c.want)
		}
	}
}

// TestSharedRateLimitHoldsAcrossInstances runs two instances, each with
// its own client and limiter, with 1 and 3 uploads taking bandwidth as
// fast as their limiter allows: together they get the total rate.
func TestSharedRateLimitHoldsAcrossInstances(t *testing.T) {
	srv := testredis.Start(t)
	const total = 2 << 20 // 2 MiB/s
	const chunk = 16 << 10
	const warmup, measure = 500 * time.Millisecond, 3 * time.Second

	var received [2]atomic.Int64
	var ctxs [2]context.Context
	var cancels [2]context.CancelFunc
	for i := range ctxs {
		ctxs[i], cancels[i] = context.WithCancel(context.Background())
	}
	var wg sync.WaitGroup
	limiters := make([]*rate.Limiter, 2)
	for i, uploads := range []int{1, 3} {
		tr := newTestTracker(t, srv, Config{Instance: string(rune('a' + i))})
		lim := rate.NewLimiter(total, 32<<10)
		lim.AllowN(time.Now(), 32<<10) // starts empty, as the core's do
		limiters[i] = lim
		var active atomic.Int64
		tr.ShareRate(total, lim, func() int { return int(active.Load()) })
		for range uploads {
			wg.Add(1)
			go func() {
				defer wg.Done()
				active.Add(1)
				defer active.Add(-1)
				for lim.WaitN(ctxs[i], chunk) == nil {
					received[i].Add(chunk)
				}
			}()
		}
	}
	time.Sleep(warmup)
	start := [2]int64{received[0].Load(), received[1].Load()}
	began := time.Now()
	time.Sleep(measure)
	elapsed := time.Since(began).Seconds()
	got := [2]int64{received[0].Load() - start[0], received[1].Load() - start[1]}
	// a's upload ends: b's three take the whole rate within a few slices
	cancels[0]()
	time.Sleep(5 * ShareSlice)
	startB, beganB := received[1].Load(), time.Now()
	time.Sleep(1500 * time.Millisecond)
	rateB := float64(received[1].Load()-startB) / time.Since(beganB).Seconds()
	cancels[1]()
	wg.Wait()
	offB := (rateB - total) / total
	t.Logf("after a's upload ended: b alone %.0f B/s (%+.1f%%)", rateB, 100*offB)
	if math.Abs(offB) > 0.15 {
		t.Fatalf("b alone got %.0f B/s, %+.1f%% off the limit", rateB, 100*offB)
	}

	rateAll := float64(got[0]+got[1]) / elapsed
	off := (rateAll - total) / total
	t.Logf("total %.0f B/s for a limit of %d B/s (%+.1f%%); instance a (1 upload) %.0f B/s, b (3 uploads) %.0f B/s",
		rateAll, total, 100*off, float64(got[0])/elapsed, float64(got[1])/elapsed)
	if math.Abs(off) > 0.15 {
		t.Fatalf("total rate %.0f B/s is %+.1f%% off the limit %d B/s", rateAll, 100*off, total)
	}
	// shares follow demand: a has a quarter
	if shareA := float64(got[0]) / float64(got[0]+got[1]); shareA < 0.15 || shareA > 0.35 {
		t.Fatalf("instance a with 1 upload of 4 got %.0f%% of the bandwidth", 100*shareA)
	}
}
