package caddyprogress

import (
	"context"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
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
//
// The shared bucket is paid in equal quanta, not read by read. Reads
// return what the client has sent so far, so their sizes vary (a few KiB
// to 32 KiB behind reverse_proxy), and x/time/rate serves waiters in
// turn: paid read by read, an upload whose reads happen to be larger
// would get a larger share. Paid a quantum at each turn, N uploads get
// 1/N each. What is still owed when the body ends is paid then.
type throttle struct {
	perUpload *rate.Limiter // nil when the upload has no limit of its own
	total     *rate.Limiter // the tracker's shared bucket, or nil
	maxRead   int           // reads are capped at the smallest burst
	quantum   int           // what each wait on total asks for
	owed      int           // bytes read but not yet paid to total
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
	if total != nil {
		t.quantum = min(total.Burst(), minBurst)
		// A read pays at most one quantum turn, so the longest wait
		// between two reads is about quantum × uploads / rate_limit_total.
		t.maxRead = min(t.maxRead, t.quantum)
	}
	return t
}

// wait blocks until n more bytes read may pass, or ctx ends, and returns
// how long it waited. ended says the body has ended: all still owed to
// the shared bucket is paid.
func (t *throttle) wait(ctx context.Context, n int, ended bool) (time.Duration, error) {
	start := time.Now()
	if t.perUpload != nil && n > 0 {
		if err := t.perUpload.WaitN(ctx, min(n, t.perUpload.Burst())); err != nil {
			return time.Since(start), fmt.Errorf("waiting for upload bandwidth: %w", err)
		}
	}
	if t.total != nil {
		t.owed += n
		for t.owed >= t.quantum || (ended && t.owed > 0) {
			pay := min(t.owed, t.quantum, t.total.Burst()) // a reload may lower the burst
			if err := t.total.WaitN(ctx, pay); err != nil {
				return time.Since(start), fmt.Errorf("waiting for shared upload bandwidth: %w", err)
			}
			t.owed -= pay
		}
	}
	return time.Since(start), nil
}

// applyTotalRate sets the tracker's shared bucket to a handler's
// rate_limit_total and burst on Caddy's started event, once the config
// the handler belongs to runs. Set at provision time, a reload that
// failed later (another module refusing its config) would leave the old
// config running with the new rate. The handlers of one config that
// name one tracker agree on rate_limit_total and burst
// (trackersettings.go).
type applyTotalRate struct{ h *Handler }

func (a applyTotalRate) Handle(context.Context, caddy.Event) error {
	a.h.uploads.shareRate(rate.Limit(a.h.RateLimitTotal), a.h.total) // with redis, this instance's share of it
	a.h.total.SetBurst(a.h.burst(a.h.RateLimitTotal))
	return nil
}

// Interface guard
var _ caddyevents.Handler = applyTotalRate{}
