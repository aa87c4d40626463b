package caddyprogress

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// endless is a body that never ends, as fast as memory.
type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }

// The counting body's Read: the cost tracking adds to every read of an
// upload. It must not allocate.
func BenchmarkCountingBodyRead(b *testing.B) {
	u := newUpload("bench", -1, time.Now(), progress.StateUploading)
	body := &countingBody{ReadCloser: io.NopCloser(endless{}), upload: u}
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := body.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// Many readers of one upload, and many uploads, counting at once while
// status snapshots are taken.
func BenchmarkTrackerUpdateAndSnapshot(b *testing.B) {
	b.Run("update one upload", func(b *testing.B) {
		u := newUpload("bench", 1<<40, time.Now(), progress.StateUploading)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				u.addReceived(32 << 10)
			}
		})
	})
	b.Run("snapshot one upload", func(b *testing.B) {
		u := newUpload("bench", 1<<40, time.Now(), progress.StateUploading)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				u.addReceived(32 << 10)
				_ = u.snapshot(time.Now())
			}
		})
	})
	b.Run("start, update, snapshot, finish", func(b *testing.B) {
		tr := newTracker("bench")
		defer tr.Destruct()
		var n sync.Mutex
		next := 0
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				n.Lock()
				id := fmt.Sprintf("u%d", next)
				next++
				n.Unlock()
				u, err := tr.start(id, 1<<20, 0, 100000)
				if err != nil {
					b.Fatal(err)
				}
				for range 32 {
					u.addReceived(32 << 10)
				}
				_ = tr.get(id).snapshot(time.Now())
				tr.finish(u, progress.StateComplete, 200, "", time.Minute)
			}
		})
	})
}

// discardStream is a ResponseWriter that flushes into nothing.
type discardStream struct{ header http.Header }

func (d *discardStream) Header() http.Header         { return d.header }
func (d *discardStream) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardStream) WriteHeader(int)             {}
func (d *discardStream) Flush()                      {}

// like the server's writers, it takes strings and deadlines
func (d *discardStream) WriteString(s string) (int, error) { return len(s), nil }
func (d *discardStream) SetWriteDeadline(time.Time) error  { return nil }

// One progress event fanned out to 1,000 subscribers of one upload: the
// work of one interval tick for a popular upload.
func BenchmarkEventsFanOut1000(b *testing.B) {
	u := newUpload("popular", 1<<40, time.Now(), progress.StateUploading)
	subs := make([]*subscriber, 1000)
	for i := range subs {
		w := &discardStream{header: http.Header{}}
		subs[i] = newSubscriber(&eventStream{w: w, rc: http.NewResponseController(w)}, followRecord(record{live: u}))
	}
	b.ReportAllocs()
	for b.Loop() {
		u.addReceived(32 << 10)
		for _, sub := range subs {
			if err := sub.progress(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/event")
}

// Memory a finished record costs while it is kept for retain, and the
// heap objects it leaves for the garbage collector to mark.
func BenchmarkFinishedRecordMemory(b *testing.B) {
	const records = 100000
	for b.Loop() {
		tr := newTracker("memory")
		tr.setMaxMemory(1 << 30)
		ids := make([]string, records)
		for i := range ids {
			ids[i] = newID()
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for _, id := range ids {
			u, err := tr.start(id, 1<<20, 0, records)
			if err != nil {
				b.Fatal(err)
			}
			u.addReceived(1 << 20)
			tr.finish(u, progress.StateComplete, 200, "", time.Hour)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/records, "B/record")
		b.ReportMetric(float64(int64(after.HeapObjects)-int64(before.HeapObjects))/records, "objects/record")
		b.ReportMetric(float64(tr.memory.used())/records, "accounted-B/record")
		runtime.KeepAlive(tr)
		runtime.KeepAlive(ids) // they are the test's, not the tracker's
		tr.Destruct()
	}
}

// Status polls while 1,000 real uploads are in flight through Caddy.
func BenchmarkStatusPollWith1000InFlight(b *testing.B) {
	const inFlight = 1000
	up := newUpstream(b)
	p := startProxy(b, "", up.host)
	release := make(chan struct{})
	var wg sync.WaitGroup
	transport := &http.Transport{MaxConnsPerHost: 0}
	for i := range inFlight {
		body := &pacedReader{data: payload(64 << 10), chunk: 16 << 10, stopAt: 16 << 10, release: release}
		req, _ := http.NewRequest(http.MethodPost, p.base+"/", body)
		req.ContentLength = 64 << 10
		req.Header.Set("X-Upload-ID", fmt.Sprintf("inflight-%d", i))
		wg.Go(func() {
			if resp, err := transport.RoundTrip(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	defer func() {
		close(release)
		wg.Wait()
	}()
	p.waitFor(b, fmt.Sprintf("inflight-%d", inFlight-1), "the last upload to start", func(code int, _ Status) bool { return code == 200 })

	client := &http.Client{Transport: &http.Transport{}}
	var latencies []time.Duration
	i := 0
	for b.Loop() {
		start := time.Now()
		resp, err := client.Get(fmt.Sprintf("%s%sinflight-%d", p.base, DefaultStatusPath, i%inFlight))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("poll answered %d", resp.StatusCode)
		}
		latencies = append(latencies, time.Since(start))
		i++
	}
	slices.Sort(latencies)
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
}

// How close a 10 s throttled upload comes to the configured rate.
func BenchmarkThrottleAccuracy(b *testing.B) {
	for _, rate := range []int64{256 << 10, 1 << 20, 8 << 20} {
		b.Run(fmt.Sprintf("%dKiB/s", rate>>10), func(b *testing.B) {
			up := newUpstream(b)
			p := startProxy(b, fmt.Sprintf("rate_limit %d", rate), up.host)
			data := strings.Repeat("x", int(rate*10))
			for b.Loop() {
				start := time.Now()
				resp, _ := p.upload(b, http.MethodPost, "/", strings.NewReader(data), int64(len(data)), nil)
				took := time.Since(start)
				if resp.StatusCode != 200 {
					b.Fatalf("answered %d", resp.StatusCode)
				}
				measured := float64(len(data)) / took.Seconds()
				b.ReportMetric(took.Seconds(), "s/upload")
				b.ReportMetric((measured-float64(rate))/float64(rate)*100, "%-off-rate")
			}
		})
	}
}

// Uploads of 16 KiB and 64 MiB, one at a time, through real Caddy with
// and without upload_progress before reverse_proxy, to a sink that
// discards bodies: the in-process counterpart of bench/e2e.sh, small
// enough to profile:
//
//	go test -run '^$' -bench 'ProxyUpload/16KiB' -cpuprofile cpu.out ./caddyprogress/
func BenchmarkProxyUpload(b *testing.B) {
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, `{"bytes":%d}`, n)
	}))
	defer sink.Close()
	sinkHost := strings.TrimPrefix(sink.URL, "http://")
	plainPort, trackedPort := testcaddy.FreePort(b), testcaddy.FreePort(b)
	testcaddy.Run(b, testcaddy.GlobalOptions+fmt.Sprintf("http://127.0.0.1:%d {\n\treverse_proxy %s\n}\n", plainPort, sinkHost)+
		siteBlock(fmt.Sprintf("http://127.0.0.1:%d", trackedPort), "", sinkHost))

	for _, size := range []int{16 << 10, 64 << 20} {
		body := payload(size)
		want := fmt.Sprintf(`{"bytes":%d}`, size)
		for _, target := range []struct {
			name string
			port int
		}{{"reverse_proxy", plainPort}, {"upload_progress", trackedPort}} {
			b.Run(fmt.Sprintf("%s/%s", humanize.IBytes(uint64(size)), target.name), func(b *testing.B) {
				client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
				url := fmt.Sprintf("http://127.0.0.1:%d/", target.port)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(body))
					if err != nil {
						b.Fatal(err)
					}
					answer, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if string(answer) != want {
						b.Fatalf("the sink answered %q; want %q", answer, want)
					}
				}
			})
		}
	}
}

// How close four uploads sharing rate_limit_total 2MiB for 10 s come to
// the total rate, and to one another (the largest gap from the mean
// duration, in percent).
func BenchmarkThrottleTotalAccuracy(b *testing.B) {
	const rate, uploads = 2 << 20, 4
	up := newUpstream(b)
	p := startProxy(b, fmt.Sprintf("rate_limit_total %d", rate), up.host)
	data := strings.Repeat("x", rate*10/uploads)
	for b.Loop() {
		start := time.Now()
		took := make([]time.Duration, uploads)
		var wg sync.WaitGroup
		for i := range uploads {
			wg.Go(func() {
				resp, _ := p.upload(b, http.MethodPost, "/", strings.NewReader(data), int64(len(data)), nil)
				took[i] = time.Since(start)
				if resp.StatusCode != 200 {
					b.Errorf("answered %d", resp.StatusCode)
				}
			})
		}
		wg.Wait()
		all := time.Since(start)
		var mean time.Duration
		for _, d := range took {
			mean += d / uploads
		}
		var spread float64
		for _, d := range took {
			spread = max(spread, math.Abs(float64(d-mean))/float64(mean)*100)
		}
		measured := float64(len(data)*uploads) / all.Seconds()
		b.ReportMetric((measured-rate)/rate*100, "%-off-rate")
		b.ReportMetric(spread, "%-spread")
	}
}

// 10,000 event subscribers, ten on each of 1,000 uploads: one interval
// tick (every upload moved on, every subscriber sent its event) per
// iteration. It reports the CPU time per event sent and the heap each
// subscriber holds between ticks.
func BenchmarkEvents10000Subscribers(b *testing.B) {
	const uploads, perUpload = 1000, 10
	ups := make([]*upload, uploads)
	for i := range ups {
		ups[i] = newUpload(fmt.Sprintf("upload-%d", i), 1<<40, time.Now(), progress.StateUploading)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	subs := make([]*subscriber, 0, uploads*perUpload)
	for _, u := range ups {
		for range perUpload {
			w := &discardStream{header: http.Header{}}
			subs = append(subs, newSubscriber(&eventStream{w: w, rc: http.NewResponseController(w)}, followRecord(record{live: u})))
		}
	}
	tick := func() {
		for _, u := range ups {
			u.addReceived(32 << 10)
		}
		for _, sub := range subs {
			if err := sub.progress(); err != nil {
				b.Fatal(err)
			}
		}
	}
	tick()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		tick()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(subs)), "ns/event")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(len(subs)), "B/subscriber")
	runtime.KeepAlive(subs)
}

// Tail latency of small uploads through real Caddy: plain reverse_proxy,
// and upload_progress with a full tracker (max_uploads finished records,
// each upload making room by removing the oldest). After 2,000 uploads
// to warm up, one iteration is 20,000 uploads of 16 KiB, 64 at a time;
// it reports p50 and p99 and the rate reached:
//
//	go test -run '^$' -bench TailLatencyFullTracker -benchtime 1x ./caddyprogress/
func BenchmarkTailLatencyFullTracker(b *testing.B) {
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}))
	defer sink.Close()
	sinkHost := strings.TrimPrefix(sink.URL, "http://")
	body := payload(16 << 10)

	for _, tracked := range []bool{false, true} {
		name := "reverse_proxy"
		if tracked {
			name = "upload_progress full tracker"
		}
		b.Run(name, func(b *testing.B) {
			port := testcaddy.FreePort(b)
			site := fmt.Sprintf("http://127.0.0.1:%d", port)
			if tracked {
				testcaddy.Run(b, testcaddy.GlobalOptions+siteBlock(site, "tracker tail", sinkHost))
				fillTracker(b, liveTracker("tail"), DefaultMaxUploads)
			} else {
				testcaddy.Run(b, testcaddy.GlobalOptions+fmt.Sprintf("%s {\n\treverse_proxy %s\n}\n", site, sinkHost))
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
			for range 2000 { // warm up: connections, buffers, the heap's size
				resp, err := client.Post(site+"/", "application/octet-stream", bytes.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			for b.Loop() {
				const uploads, workers = 20000, 64
				latencies := make([]time.Duration, uploads)
				var next sync.WaitGroup
				var mu sync.Mutex
				i := 0
				start := time.Now()
				for range workers {
					next.Go(func() {
						for {
							mu.Lock()
							n := i
							i++
							mu.Unlock()
							if n >= uploads {
								return
							}
							sent := time.Now()
							resp, err := client.Post(site+"/", "application/octet-stream", bytes.NewReader(body))
							if err != nil {
								b.Error(err)
								return
							}
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							latencies[n] = time.Since(sent)
						}
					})
				}
				next.Wait()
				took := time.Since(start)
				slices.Sort(latencies)
				b.ReportMetric(float64(latencies[uploads/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(latencies[uploads*99/100].Microseconds())/1000, "p99-ms")
				b.ReportMetric(uploads/took.Seconds(), "uploads/s")
			}
		})
	}
}

// fillTracker fills t with n finished records kept for the default
// retain, as the uploads that follow them are.
func fillTracker(b *testing.B, t *tracker, n int) {
	b.Helper()
	t.setMaxMemory(1 << 30) // room for n records: max_memory's default keeps about 67,000
	for i := range n {
		u, err := t.start(fmt.Sprintf("filler-%d", i), 16<<10, 0, n)
		if err != nil {
			b.Fatal(err)
		}
		u.addReceived(16 << 10)
		t.finish(u, progress.StateComplete, 200, "", DefaultRetain)
	}
	runtime.GC()
}

// What a full tracker (the default 100,000 finished records) costs each
// garbage collection: the time of a forced collection with the tracker,
// less its time without one. Finished records hold no pointers, so the
// collector has next to nothing to mark in them.
func BenchmarkGCWithFullTracker(b *testing.B) {
	gcTime := func() time.Duration {
		const cycles = 10
		runtime.GC()
		start := time.Now()
		for range cycles {
			runtime.GC()
		}
		return time.Since(start) / cycles
	}
	for b.Loop() {
		empty := gcTime()
		tr := newTracker("gc")
		tr.setMaxMemory(1 << 30) // room for every record: max_memory's default keeps about 67,000
		for i := range DefaultMaxUploads {
			u, err := tr.start(fmt.Sprintf("record-%d", i), 16<<10, 0, DefaultMaxUploads)
			if err != nil {
				b.Fatal(err)
			}
			u.addReceived(16 << 10)
			tr.finish(u, progress.StateComplete, 200, "", DefaultRetain)
		}
		full := gcTime()
		runtime.KeepAlive(tr)
		tr.Destruct()
		b.ReportMetric(float64(empty.Microseconds())/1000, "empty-ms/gc")
		b.ReportMetric(float64(full.Microseconds())/1000, "full-ms/gc")
	}
}
