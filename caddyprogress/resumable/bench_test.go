package resumable_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// benchSize is the upload of BenchmarkResumableVersusPlain; set
// RESUMABLE_BENCH_MB to change it (the README's figures are for 1024).
func benchSize() int64 {
	if mb, err := strconv.Atoi(os.Getenv("RESUMABLE_BENCH_MB")); err == nil && mb > 0 {
		return int64(mb) << 20
	}
	return 1 << 30
}

// BenchmarkResumableVersusPlain uploads the same file through the same
// Caddy, once as a plain tracked upload to the backend and once as a
// resumable upload (one creation-with-upload request, stored on disk,
// then delivered): the throughput of each and their ratio, the disk
// bytes written per byte uploaded (from /proc/self/io), the time from
// the last byte sent to the backend's answer, and the peak heap.
//
//	go test -run '^$' -bench ResumableVersusPlain -benchtime 1x ./caddyprogress/resumable/
func BenchmarkResumableVersusPlain(b *testing.B) {
	back := newBackend(b)
	p := startProxy(b, back, "max_size 20GiB")
	size := benchSize()
	for b.Loop() {
		plain := timedUpload(b, p, http.MethodPost, "/upload", size, nil)
		writtenBefore := diskWrites(b)
		resumable := timedUpload(b, p, http.MethodPost, "/files/", size, map[string]string{
			"Tus-Resumable": "1.0.0", "Upload-Length": strconv.FormatInt(size, 10),
			"Content-Type": "application/offset+octet-stream"})
		written := diskWrites(b) - writtenBefore

		mbps := func(d time.Duration) float64 { return float64(size) / d.Seconds() / (1 << 20) }
		b.ReportMetric(mbps(plain.total), "plain-MiB/s")
		b.ReportMetric(mbps(resumable.total), "resumable-MiB/s")
		b.ReportMetric(plain.total.Seconds()/resumable.total.Seconds(), "ratio")
		b.ReportMetric(float64(written)/float64(size), "disk-bytes/byte")
		b.ReportMetric(float64(resumable.afterLastByte.Milliseconds()), "last-byte-to-answer-ms")
		b.ReportMetric(float64(plain.afterLastByte.Milliseconds()), "plain-last-byte-to-answer-ms")
		b.ReportMetric(float64(max(plain.peakHeap, resumable.peakHeap))/(1<<20), "peak-heap-MiB")
	}
	if got := back.got(); len(got) == 0 || got[len(got)-1].bytes != size {
		b.Fatalf("the backend got %d deliveries", len(got))
	}
}

type timing struct {
	total, afterLastByte time.Duration
	peakHeap             uint64
}

// timedUpload sends size bytes to path and times it.
func timedUpload(b *testing.B, p *proxy, method, path string, size int64, header map[string]string) timing {
	b.Helper()
	body := &zeroBody{left: size}
	req, err := http.NewRequest(method, p.base+path, body)
	if err != nil {
		b.Fatal(err)
	}
	req.ContentLength = size
	for k, v := range header {
		req.Header.Set(k, v)
	}
	var peak atomic.Uint64
	stop := make(chan struct{})
	go sampleHeap(&peak, stop)
	start := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	end := time.Now()
	close(stop)
	if resp.StatusCode >= 300 || !strings.Contains(string(answer), fmt.Sprintf(`"bytes":%d`, size)) {
		b.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, answer)
	}
	return timing{total: end.Sub(start), afterLastByte: end.Sub(body.lastByte), peakHeap: peak.Load()}
}

func sampleHeap(peak *atomic.Uint64, stop chan struct{}) {
	var m runtime.MemStats
	for {
		runtime.ReadMemStats(&m)
		if m.HeapInuse > peak.Load() {
			peak.Store(m.HeapInuse)
		}
		select {
		case <-stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// zeroBody is size bytes of a repeating pattern, with the time its last
// byte was handed out.
type zeroBody struct {
	left     int64
	lastByte time.Time
}

func (z *zeroBody) Read(p []byte) (int, error) {
	if z.left <= 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), z.left))
	for i := range p[:n] {
		p[i] = byte(i)
	}
	z.left -= int64(n)
	if z.left == 0 {
		z.lastByte = time.Now()
	}
	return n, nil
}

// diskWrites is the bytes this process caused to be written to storage.
func diskWrites(b *testing.B) int64 {
	b.Helper()
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skipf("no /proc/self/io: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}
