package caddyprogress

import (
	"github.com/prometheus/client_golang/prometheus"
)

// The metrics and admin listing of a tracker's Redis side, read from
// its counters when scraped (never on an upload's path):
//
//	caddy_upload_progress_redis_up{tracker}                      1 while Redis answers, else 0
//	caddy_upload_progress_redis_round_trips_total{tracker}       requests sent to Redis (a pipeline counts once)
//	caddy_upload_progress_redis_errors_total{tracker}            round trips that failed
//	caddy_upload_progress_redis_published_total{tracker}         documents sent to Redis (stored; published to followers)
//	caddy_upload_progress_redis_lost_total{tracker}              uploads of this instance that went on locally only
//	caddy_upload_progress_redis_aborted_total{tracker}           uploads of lost instances this one ended
//	caddy_upload_progress_redis_doc_bytes_total{tracker}         bytes of documents sent to Redis (records and group summaries)
//	caddy_upload_progress_redis_docs_truncated_total{tracker}    documents sent without their files, past the 64 KiB cap
//	caddy_upload_progress_redis_publish_latency_seconds{tracker} histogram of publish batches
var sharedDescs = struct {
	up, roundTrips, errors, published, lost, aborted, latency *prometheus.Desc
	docBytes, truncated                                       *prometheus.Desc
}{
	up:         sharedDesc("redis_up", "1 while the tracker's Redis answers, else 0."),
	roundTrips: sharedDesc("redis_round_trips_total", "Requests sent to Redis (a pipeline counts once)."),
	errors:     sharedDesc("redis_errors_total", "Round trips to Redis that failed (network, timeout or an error reply)."),
	published:  sharedDesc("redis_published_total", "Upload documents sent to Redis: stored, and published to the instances that follow the upload."),
	lost:       sharedDesc("redis_lost_total", "Uploads of this instance whose claim another instance ended while Redis was out of reach: they went on locally only."),
	aborted:    sharedDesc("redis_aborted_total", "Uploads of lost instances that this instance ended as aborted."),
	latency:    sharedDesc("redis_publish_latency_seconds", "Time one publish batch to Redis took, round trip included."),
	docBytes:   sharedDesc("redis_doc_bytes_total", "Bytes of upload documents sent to Redis: records' and group hashes' member summaries."),
	truncated:  sharedDesc("redis_docs_truncated_total", "Upload documents sent to Redis without their files, past the 64 KiB cap."),
}

func sharedDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, metricsSubsystem, name), help, []string{"tracker"}, nil)
}

// sharedCollector reports each tracker's Redis side, if it has one.
type sharedCollector struct{}

func (sharedCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sharedDescs.up, sharedDescs.roundTrips, sharedDescs.errors,
		sharedDescs.published, sharedDescs.lost, sharedDescs.aborted, sharedDescs.latency,
		sharedDescs.docBytes, sharedDescs.truncated} {
		ch <- d
	}
}

func (sharedCollector) Collect(ch chan<- prometheus.Metric) {
	trackers.Range(func(_, value any) bool {
		t, ok := value.(*tracker)
		if !ok {
			return true
		}
		entries := t.sharedEntries()
		if len(entries) == 0 {
			return true
		}
		var sum sharedStats
		var truncated uint64
		up := 1.0
		buckets := map[float64]uint64{}
		for _, e := range entries { // two only during a reload that changed redis
			s := e.c.stats()
			sum.roundTrips += s.roundTrips
			sum.errors += s.errors
			sum.published += s.published
			sum.lost += s.lost
			sum.aborted += s.aborted
			sum.docBytes += s.docBytes
			truncated += e.truncated.Load()
			sum.latencyCount += s.latencyCount
			sum.latencySum += s.latencySum
			for i, b := range s.latencyBuckets {
				buckets[b] += s.latencyCounts[i]
			}
			if !e.c.health().Up {
				up = 0
			}
		}
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), t.name)
		}
		ch <- prometheus.MustNewConstMetric(sharedDescs.up, prometheus.GaugeValue, up, t.name)
		counter(sharedDescs.roundTrips, sum.roundTrips)
		counter(sharedDescs.errors, sum.errors)
		counter(sharedDescs.published, sum.published)
		counter(sharedDescs.lost, sum.lost)
		counter(sharedDescs.aborted, sum.aborted)
		counter(sharedDescs.docBytes, sum.docBytes)
		counter(sharedDescs.truncated, truncated)
		ch <- prometheus.MustNewConstHistogram(sharedDescs.latency, sum.latencyCount, sum.latencySum, buckets, t.name)
		return true
	})
}

// describeShared describes the tracker's Redis sides; none without.
func (t *tracker) describeShared() []adminRedis {
	var out []adminRedis
	for _, e := range t.sharedEntries() {
		h := e.c.health()
		out = append(out, adminRedis{Up: h.Up, Since: h.Since.UTC(), LastError: h.LastError})
	}
	return out
}

// Interface guard
var _ prometheus.Collector = sharedCollector{}
