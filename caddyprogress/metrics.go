package caddyprogress

import (
	"errors"
	"fmt"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/prometheus/client_golang/prometheus"
)

// Prometheus metrics, in Caddy's registry (served by the admin
// endpoint's /metrics and by the metrics handler). They are labelled by
// tracker name, never by upload ID:
//
//	caddy_upload_progress_uploads_started_total{tracker}          uploads tracked
//	caddy_upload_progress_uploads_finished_total{tracker,status}  status: complete, error or aborted
//	caddy_upload_progress_uploads_in_flight{tracker}              uploading or processing now
//	caddy_upload_progress_received_bytes_total{tracker}           bytes read from clients by tracked uploads
//	caddy_upload_progress_uploads_untracked_total{tracker}        proxied untracked: the tracker was full
//	caddy_upload_progress_event_subscribers{tracker}              open Server-Sent Events streams and WebSockets
//	caddy_upload_progress_throttled_seconds_total{tracker}        time uploads spent waiting on a rate limit
//	caddy_upload_progress_memory_bytes{tracker}                   bytes the tracker keeps, against max_memory
//	caddy_upload_progress_evictions_total{tracker,record,reason}  records removed early to make room:
//	                                                              record finished or reservation,
//	                                                              reason max_uploads or max_memory
//
// The collectors are made once: each config load makes a new registry,
// and they are registered into every one. Uploads in flight and bytes
// received are read from the trackers when scraped, so the upload's
// hot path (countingBody.Read) never touches a metric.
const (
	metricsNamespace = "caddy"
	metricsSubsystem = "upload_progress"
)

var metrics = struct {
	started     *prometheus.CounterVec
	finished    *prometheus.CounterVec
	untracked   *prometheus.CounterVec
	subscribers *prometheus.GaugeVec
	throttled   *prometheus.CounterVec
	evictions   *prometheus.CounterVec
	trackers    *trackerCollector
}{
	started: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Subsystem: metricsSubsystem,
		Name:      "uploads_started_total",
		Help:      "Uploads that started being tracked.",
	}, []string{"tracker"}),
	finished: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Subsystem: metricsSubsystem,
		Name:      "uploads_finished_total",
		Help:      "Tracked uploads that ended, by final status (complete, error, aborted).",
	}, []string{"tracker", "status"}),
	untracked: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Subsystem: metricsSubsystem,
		Name:      "uploads_untracked_total",
		Help:      "Uploads proxied untracked because every record of the tracker was in flight (max_uploads).",
	}, []string{"tracker"}),
	subscribers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metricsNamespace,
		Subsystem: metricsSubsystem,
		Name:      "event_subscribers",
		Help:      "Open Server-Sent Events streams and WebSockets.",
	}, []string{"tracker"}),
	throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Subsystem: metricsSubsystem,
		Name:      "throttled_seconds_total",
		Help:      "Time tracked uploads spent waiting on their rate limit, in seconds.",
	}, []string{"tracker"}),
	evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Subsystem: metricsSubsystem,
		Name:      "evictions_total",
		Help:      "Records removed before their time to make room, by record (finished, reservation) and reason (max_uploads, max_memory).",
	}, []string{"tracker", "record", "reason"}),
	trackers: &trackerCollector{
		inFlight: prometheus.NewDesc(
			prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "uploads_in_flight"),
			"Tracked uploads uploading or processing now.",
			[]string{"tracker"}, nil),
		received: prometheus.NewDesc(
			prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "received_bytes_total"),
			"Bytes read from clients by tracked uploads, those in flight included.",
			[]string{"tracker"}, nil),
		memory: prometheus.NewDesc(
			prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "memory_bytes"),
			"Bytes the tracker keeps (records, parts, documents, groups), counted toward max_memory.",
			[]string{"tracker"}, nil),
	},
}

// registerMetrics registers the package's collectors into a config's
// registry. Registering them again (several handlers, one config) is
// not an error.
func registerMetrics(registry *prometheus.Registry) error {
	if registry == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{
		metrics.started,
		metrics.finished,
		metrics.untracked,
		metrics.subscribers,
		metrics.throttled,
		metrics.evictions,
		metrics.trackers,
		sharedCollector{}, // sharedmetrics.go
	} {
		if err := registry.Register(c); err != nil {
			if _, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); !ok {
				return fmt.Errorf("registering upload_progress metrics: %w", err)
			}
		}
	}
	return nil
}

// observeThrottled adds d to the time uploads of the tracker spent
// waiting on their rate limit: once per upload, when it ends. An upload
// that never waited makes no series.
func observeThrottled(tracker string, d time.Duration) {
	if d > 0 {
		metrics.throttled.WithLabelValues(tracker).Add(d.Seconds())
	}
}

// trackerCollector reports, when scraped, each live tracker's uploads
// in flight and the bytes its uploads received.
type trackerCollector struct {
	inFlight *prometheus.Desc
	received *prometheus.Desc
	memory   *prometheus.Desc
}

func (c *trackerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.inFlight
	ch <- c.received
	ch <- c.memory
}

func (c *trackerCollector) Collect(ch chan<- prometheus.Metric) {
	trackers.Range(func(_, value any) bool {
		t, ok := value.(*tracker)
		if !ok {
			return true
		}
		inFlight, received := t.stats()
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(inFlight), t.name)
		ch <- prometheus.MustNewConstMetric(c.received, prometheus.CounterValue, float64(received), t.name)
		ch <- prometheus.MustNewConstMetric(c.memory, prometheus.GaugeValue, float64(t.memoryInUse()), t.name)
		return true
	})
}

// stats counts the tracker's uploads in flight, and the bytes received
// by all its uploads so far: those counted when they finished or were
// forgotten, plus those of the live records.
func (t *tracker) stats() (inFlight int, received int64) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	received = t.countedBytes
	for _, u := range t.uploads {
		switch u.currentState() {
		case progress.StateUploading, progress.StateProcessing, progress.StatePaused, progress.StateDelivering:
			inFlight++
		}
		if !u.bytesCounted {
			received += u.received.Load()
		}
	}
	return inFlight, received
}

// countBytes adds a finished (or forgotten) upload's bytes to the
// tracker's count, once: for a finished upload, what its record shows.
// The caller holds t.mu for writing.
func (t *tracker) countBytes(u *upload) {
	if u.bytesCounted {
		return
	}
	u.bytesCounted = true
	if u.currentState().Final() {
		t.countedBytes += u.finalReceived
	} else {
		t.countedBytes += u.received.Load()
	}
}

// Interface guard
var _ prometheus.Collector = (*trackerCollector)(nil)

// handlerMetrics are one tracker's series of the per-upload metrics,
// looked up once in Provision so that an upload does not hash labels.
type handlerMetrics struct {
	started     prometheus.Counter
	finished    [progress.StateAborted + 1]prometheus.Counter // by final state; nil for the others
	untracked   prometheus.Counter
	subscribers prometheus.Gauge
}

func newHandlerMetrics(tracker string) handlerMetrics {
	m := handlerMetrics{
		started:     metrics.started.WithLabelValues(tracker),
		untracked:   metrics.untracked.WithLabelValues(tracker),
		subscribers: metrics.subscribers.WithLabelValues(tracker),
	}
	for _, st := range []state{progress.StateComplete, progress.StateError, progress.StateAborted} {
		m.finished[st] = metrics.finished.WithLabelValues(tracker, st.String())
	}
	return m
}

// Why a record is removed; only the early removals are counted.
const (
	evictExpired    = iota // its time was up
	evictReplaced          // a new upload took its ID
	evictMaxUploads        // to make room: max_uploads
	evictMaxMemory         // to make room: max_memory
	evictReasons
)

// evictionCounters are a tracker's series of the evictions metric, by
// reason; nil for the reasons not counted.
type evictionCounters struct {
	finished     [evictReasons]prometheus.Counter
	reservations [evictReasons]prometheus.Counter
}

func newEvictionCounters(tracker string) evictionCounters {
	var c evictionCounters
	for reason, name := range map[int]string{evictMaxUploads: "max_uploads", evictMaxMemory: "max_memory"} {
		c.finished[reason] = metrics.evictions.WithLabelValues(tracker, "finished", name)
		c.reservations[reason] = metrics.evictions.WithLabelValues(tracker, "reservation", name)
	}
	return c
}
