package caddyprogress

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// scrape is one reading of the metrics, by series as the text format
// writes it (labels sorted by name), e.g.
// caddy_upload_progress_uploads_finished_total{status="complete",tracker="x"}.
type scrape map[string]float64

func parseScrape(t testing.TB, text []byte) scrape {
	t.Helper()
	s := scrape{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		s[line[:i]] = v
	}
	return s
}

// metric returns the value of a caddy_upload_progress_ series of the
// tracker, and whether it is there; extra labels come before tracker.
func (s scrape) metric(name, tracker string, labels ...string) (float64, bool) {
	key := fmt.Sprintf("caddy_upload_progress_%s{%stracker=%q}", name, strings.Join(append(labels, ""), ","), tracker)
	v, ok := s[key]
	return v, ok
}

// want checks that the series has the value.
func (s scrape) want(t testing.TB, when string, want float64, name, tracker string, labels ...string) {
	t.Helper()
	got, ok := s.metric(name, tracker, labels...)
	if !ok || got != want {
		t.Errorf("%s: %s%v{tracker=%q} = %v (present: %v), want %v", when, name, labels, tracker, got, ok, want)
	}
}

// wantIncrease checks that a counter grew by want since before (counters
// are package-level: they carry on from earlier tests, as across reloads).
func (s scrape) wantIncrease(t testing.TB, when string, before scrape, want float64, name, tracker string, labels ...string) {
	t.Helper()
	got, _ := s.metric(name, tracker, labels...)
	was, _ := before.metric(name, tracker, labels...)
	if got-was != want {
		t.Errorf("%s: %s%v{tracker=%q} grew by %v (from %v to %v), want %v", when, name, labels, tracker, got-was, was, got, want)
	}
}

// scrapeMetrics reads Caddy's metrics from the admin endpoint.
func (p *adminProxy) scrapeMetrics(t testing.TB) scrape {
	t.Helper()
	code, body := p.adminGet(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("admin /metrics: %d %s", code, body)
	}
	return parseScrape(t, body)
}

func TestMetricsFollowAnUpload(t *testing.T) {
	const tr = "metrics-upload"
	up := newUpstream(t)
	p := startProxyWithAdmin(t, "\t\ttracker "+tr, up.host)

	before := p.scrapeMetrics(t)
	before.want(t, "before", 0, "uploads_in_flight", tr)
	before.want(t, "before", 0, "received_bytes_total", tr)

	events := p.subscribe(t, "watched")
	events.next(t, 5*time.Second) // pending: the stream is open
	data := payload(4 << 20)
	paced := &pacedReader{data: data, chunk: 64 << 10, stopAt: 1 << 20, release: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.upload(t, http.MethodPost, "/", paced, int64(len(data)), http.Header{"X-Upload-Id": {"watched"}})
	}()
	p.waitFor(t, "watched", "1 MiB received", func(_ int, s Status) bool { return s.Received == 1<<20 })

	during := p.scrapeMetrics(t)
	during.wantIncrease(t, "mid-upload", before, 1, "uploads_started_total", tr)
	during.want(t, "mid-upload", 1, "uploads_in_flight", tr)
	during.want(t, "mid-upload", 1<<20, "received_bytes_total", tr)
	during.want(t, "mid-upload", 1, "event_subscribers", tr)
	during.wantIncrease(t, "mid-upload", before, 0, "uploads_finished_total", tr, `status="complete"`)

	close(paced.release)
	<-done
	p.waitForStatus(t, "watched", "complete")
	events.all(t, 5*time.Second)

	after := p.scrapeMetrics(t)
	after.wantIncrease(t, "after", before, 1, "uploads_started_total", tr)
	after.want(t, "after", 0, "uploads_in_flight", tr)
	after.want(t, "after", 4<<20, "received_bytes_total", tr)
	after.wantIncrease(t, "after", before, 1, "uploads_finished_total", tr, `status="complete"`)
	after.want(t, "after", 0, "event_subscribers", tr)

	// every series is per tracker, never per upload
	for series := range after {
		if strings.Contains(series, "watched") {
			t.Errorf("series %s carries an upload ID", series)
		}
	}
}

func TestMetricsCountFailuresAndUntrackedUploads(t *testing.T) {
	const tr = "metrics-fail"
	up := newUpstream(t)
	up.status = http.StatusInternalServerError
	p := startProxyWithAdmin(t, "\t\ttracker "+tr+"\n\t\tmax_uploads 1", up.host)
	before := p.scrapeMetrics(t)

	p.upload(t, http.MethodPost, "/", strings.NewReader("hello"), 5, http.Header{"X-Upload-Id": {"fails"}})
	p.waitForStatus(t, "fails", "error")

	// the client goes away mid-body
	conn, err := net.Dial("tcp", strings.TrimPrefix(p.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(conn)
	fmt.Fprintf(w, "POST / HTTP/1.1\r\nHost: %s\r\nX-Upload-ID: dropped\r\nContent-Length: %d\r\n\r\n", conn.RemoteAddr(), 10<<20)
	w.Write(payload(1 << 20))
	w.Flush()
	p.waitFor(t, "dropped", "1 MiB received", func(_ int, s Status) bool { return s.Received == 1<<20 })

	// meanwhile the only record is in flight: the next upload goes untracked
	resp, _ := p.upload(t, http.MethodPost, "/", strings.NewReader("untracked"), 9, http.Header{"X-Upload-Id": {"untracked"}})
	if resp.StatusCode != http.StatusInternalServerError || resp.Header.Get("X-Upload-ID") != "" {
		t.Fatalf("upload into a full tracker: %d with ID %q, want the upstream's 500 and no ID", resp.StatusCode, resp.Header.Get("X-Upload-ID"))
	}
	conn.Close()
	p.waitForStatus(t, "dropped", "aborted")

	s := p.scrapeMetrics(t)
	s.wantIncrease(t, "after", before, 2, "uploads_started_total", tr)
	s.wantIncrease(t, "after", before, 1, "uploads_finished_total", tr, `status="error"`)
	s.wantIncrease(t, "after", before, 1, "uploads_finished_total", tr, `status="aborted"`)
	s.wantIncrease(t, "after", before, 0, "uploads_finished_total", tr, `status="complete"`)
	s.wantIncrease(t, "after", before, 1, "uploads_untracked_total", tr)
	s.want(t, "after", 0, "uploads_in_flight", tr)
	s.want(t, "after", 5+1<<20, "received_bytes_total", tr)
}

// The collectors can be registered into a (pedantic, as Caddy's) registry
// more than once, and observeThrottled adds up seconds per tracker.
func TestThrottledSecondsAddUpPerTracker(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	for range 2 {
		if err := registerMetrics(reg); err != nil {
			t.Fatalf("registering: %v", err)
		}
	}
	gather := func() scrape {
		rec := httptest.NewRecorder()
		promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}).
			ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("gathering: %d %s", rec.Code, rec.Body)
		}
		return parseScrape(t, rec.Body.Bytes())
	}
	before := gather()
	observeThrottled("throttle-a", 1500*time.Millisecond)
	observeThrottled("throttle-a", 250*time.Millisecond)
	observeThrottled("throttle-b", 0)

	s := gather()
	s.wantIncrease(t, "throttled", before, 1.75, "throttled_seconds_total", "throttle-a")
	if v, ok := s.metric("throttled_seconds_total", "throttle-b"); ok {
		t.Errorf("a zero wait made a series: %v", v)
	}
}

// Each config load makes a new registry: the counters are registered
// into it and carry on from where they were.
func TestMetricsCarryOnAcrossReloads(t *testing.T) {
	const tr = "metrics-reload"
	up := newUpstream(t)
	p := startProxyWithAdmin(t, "\t\ttracker "+tr, up.host)
	before := p.scrapeMetrics(t)
	p.upload(t, http.MethodPost, "/", strings.NewReader("first"), 5, http.Header{"X-Upload-Id": {"first"}})
	p.waitForStatus(t, "first", "complete")
	p.scrapeMetrics(t).wantIncrease(t, "before the reload", before, 1, "uploads_started_total", tr)

	p.reload(t, "\t\ttracker "+tr+"\n\t\tinterval 50ms", up.host)
	s := p.scrapeMetrics(t)
	s.wantIncrease(t, "after the reload", before, 1, "uploads_started_total", tr)
	s.want(t, "after the reload", 5, "received_bytes_total", tr)

	p.upload(t, http.MethodPost, "/", strings.NewReader("second"), 6, http.Header{"X-Upload-Id": {"second"}})
	p.waitForStatus(t, "second", "complete")
	s = p.scrapeMetrics(t)
	s.wantIncrease(t, "after a second upload", before, 2, "uploads_started_total", tr)
	s.wantIncrease(t, "after a second upload", before, 2, "uploads_finished_total", tr, `status="complete"`)
	s.want(t, "after a second upload", 11, "received_bytes_total", tr)
}

func TestMetricsShowMemoryAndEvictions(t *testing.T) {
	const tr = "metrics-memory"
	up := newUpstream(t)
	p := startProxyWithAdmin(t, "\t\ttracker "+tr+"\n\t\tmax_uploads 2", up.host)
	before := p.scrapeMetrics(t)
	for _, id := range []string{"evicted", "kept-1", "kept-2"} {
		p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {id}})
		p.waitForStatus(t, id, "complete")
	}
	s := p.scrapeMetrics(t)
	s.wantIncrease(t, "after", before, 1, "evictions_total", tr, `reason="max_uploads"`, `record="finished"`)
	s.wantIncrease(t, "after", before, 0, "evictions_total", tr, `reason="max_memory"`, `record="finished"`)
	used, ok := s.metric("memory_bytes", tr)
	if want := float64(liveTracker(tr).memoryInUse()); !ok || used != want || used < 500 {
		t.Fatalf("memory_bytes = %v (present: %v), want the tracker's %v for two finished records", used, ok, want)
	}
}
