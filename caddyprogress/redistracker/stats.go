package redistracker

import (
	"sync/atomic"
	"time"
)

// LatencyBuckets are the upper bounds, in seconds, of the publish
// latency histogram (the time one publish batch takes, Redis round trip
// included).
var LatencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}

// Stats are the tracker's counters since New, for the core's metrics
// collector (caddy_upload_progress_redis_*): plain numbers, so that this
// package does not register anything itself.
type Stats struct {
	// RoundTrips counts the requests sent to Redis: a pipeline counts
	// once, a pub/sub subscription change once.
	RoundTrips uint64
	// Errors counts round trips that failed (network, timeout, or an
	// error reply).
	Errors uint64
	// Published counts the documents sent to Redis: stored, and
	// published when another instance watches the upload (watch.go).
	Published uint64
	// Lost counts uploads of this instance whose claim another instance
	// ended (their lease expired while Redis could not be reached) or
	// that a re-claim found taken: they went on locally only.
	Lost uint64
	// Aborted counts uploads of lost instances this instance ended.
	Aborted uint64
	// DocBytes counts the bytes of the documents sent to Redis, as they
	// are queued: records' (claims, reservations, publishes, lease
	// renewals) and group hashes' summaries.
	DocBytes uint64
	// PublishLatency is the histogram of publish batches.
	PublishLatency Histogram
}

// Histogram is a snapshot of a latency histogram: Counts[i] counts the
// observations at or below LatencyBuckets[i] (cumulative, as Prometheus
// wants them); Count counts them all and Sum adds them up, in seconds.
type Histogram struct {
	Counts []uint64
	Count  uint64
	Sum    float64
}

// counters are the live Stats, atomics only.
type counters struct {
	roundTrips atomic.Uint64
	errors     atomic.Uint64
	published  atomic.Uint64
	lost       atomic.Uint64
	aborted    atomic.Uint64
	docBytes   atomic.Uint64

	latencyBuckets [12]atomic.Uint64 // one per bucket, the last for above all
	latencyCount   atomic.Uint64
	latencySumNS   atomic.Int64
}

func (c *counters) observePublish(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(LatencyBuckets) && s > LatencyBuckets[i] {
		i++
	}
	c.latencyBuckets[i].Add(1)
	c.latencyCount.Add(1)
	c.latencySumNS.Add(int64(d))
}

func (c *counters) snapshot() Stats {
	s := Stats{
		RoundTrips: c.roundTrips.Load(),
		Errors:     c.errors.Load(),
		Published:  c.published.Load(),
		Lost:       c.lost.Load(),
		Aborted:    c.aborted.Load(),
		DocBytes:   c.docBytes.Load(),
		PublishLatency: Histogram{
			Counts: make([]uint64, len(LatencyBuckets)),
			Count:  c.latencyCount.Load(),
			Sum:    time.Duration(c.latencySumNS.Load()).Seconds(),
		},
	}
	var cum uint64
	for i := range LatencyBuckets {
		cum += c.latencyBuckets[i].Load()
		s.PublishLatency.Counts[i] = cum
	}
	return s
}
