package caddyprogress

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/time/rate"
)

// minBurst is the least token bucket size: smaller buckets would make
// reads so short that their overhead shows.
const minBurst = 32 << 10

// defaultBurst is a tenth of a second at the rate, at least minBurst.
func defaultBurst(bytesPerSecond int64) int {
	return int(max(bytesPerSecond/10, minBurst))
}

// newLimiter makes a token bucket for bytesPerSecond that starts empty,
// so that short uploads are not let through at full speed.
func newLimiter(bytesPerSecond int64, burst int) *rate.Limiter {
	l := rate.NewLimiter(rate.Limit(bytesPerSecond), burst)
	l.AllowN(time.Now(), burst)
	return l
}

// throttle slows one upload down by backpressure: after each read it
// waits until the upload's own bucket and the tracker's shared bucket
// allow the bytes read, and only then returns, so the next read from
// the client (and with it TCP or HTTP/2 flow control) waits too. Nothing
// is buffered beyond the one read.
type throttle struct {
	perUpload *rate.Limiter // nil when the upload has no limit of its own
	total     *rate.Limiter // the tracker's shared bucket, or nil
	maxRead   int           // reads are capped at the smallest burst
}

// newThrottle returns nil when there is nothing to limit.
func newThrottle(perUpload, total *rate.Limiter) *throttle {
	if perUpload == nil && total == nil {
		return nil
	}
	t := &throttle{perUpload: perUpload, total: total, maxRead: int(^uint(0) >> 1)}
	for _, l := range []*rate.Limiter{perUpload, total} {
		if l != nil {
			t.maxRead = min(t.maxRead, l.Burst())
		}
	}
	return t
}

// wait blocks until n bytes may pass, or ctx ends, and returns how long
// it waited.
func (t *throttle) wait(ctx context.Context, n int) (time.Duration, error) {
	start := time.Now()
	for _, l := range []*rate.Limiter{t.perUpload, t.total} {
		if l == nil {
			continue
		}
		if err := l.WaitN(ctx, min(n, l.Burst())); err != nil {
			return time.Since(start), fmt.Errorf("waiting for upload bandwidth: %w", err)
		}
	}
	return time.Since(start), nil
}
