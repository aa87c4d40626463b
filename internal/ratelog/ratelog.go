// Package ratelog gates log lines that clients can cause, so that one
// client sending bad requests in a loop (or a partition losing many
// uploads at once) cannot flood the log.
package ratelog

import (
	"sync/atomic"
	"time"
)

// Gate lets at most one log line a second through. Its zero value is
// ready; it is safe for concurrent use and takes no lock.
type Gate struct {
	last atomic.Int64 // unix nanoseconds of the last line let through
}

// Allow reports whether a line may be logged now, and if so, counts it
// as logged.
func (g *Gate) Allow() bool {
	now := time.Now().UnixNano()
	last := g.last.Load()
	return now-last >= int64(time.Second) && g.last.CompareAndSwap(last, now)
}
