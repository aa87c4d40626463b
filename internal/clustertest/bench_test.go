package clustertest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkCrossInstanceLatency measures how long a progress change on
// the uploading instance (A) takes to show on another instance's (B)
// status route, at the default interval (100ms): each op hands one
// more chunk to an upload through A, then polls B until it shows it.
//
//	go test -run XXX -bench CrossInstanceLatency -benchtime 200x ./internal/clustertest
func BenchmarkCrossInstanceLatency(b *testing.B) {
	rs := startRedis(b)
	up := newUpstream(b)
	a := startInstance(b, "A", rs.URL(), "", up.host)
	bb := startInstance(b, "B", rs.URL(), "", up.host)
	const chunk = 16 << 10
	body := &steppedReader{next: make(chan struct{})}
	id := "latency-1"
	done := a.uploadAsync(id, body, -1, nil)

	var latencies []time.Duration
	var sent int64
	b.ResetTimer()
	for i := range b.N {
		time.Sleep(time.Duration(20+(i*37)%90) * time.Millisecond) // a different phase against the publishers' ticks each time
		body.next <- struct{}{}
		sent += chunk
		start := time.Now()
		for {
			code, s := bb.status(b, id)
			if code == http.StatusOK && s.Received >= sent {
				break
			}
			if time.Since(start) > 5*time.Second {
				b.Fatalf("B never showed %d bytes", sent)
			}
			time.Sleep(time.Millisecond)
		}
		latencies = append(latencies, time.Since(start))
	}
	b.StopTimer()
	close(body.next)
	if r := <-done; r.code != http.StatusOK {
		b.Fatalf("upload: %+v", r)
	}
	slices.Sort(latencies)
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(latencies[len(latencies)-1].Microseconds())/1000, "max-ms")
}

// steppedReader hands out 16KiB each time next is signalled, and ends
// when next is closed.
type steppedReader struct {
	next    chan struct{}
	pending int
}

func (s *steppedReader) Read(p []byte) (int, error) {
	if s.pending == 0 {
		if _, ok := <-s.next; !ok {
			return 0, io.EOF
		}
		s.pending = 16 << 10
	}
	n := min(len(p), s.pending)
	clear(p[:n])
	s.pending -= n
	return n, nil
}

// BenchmarkThousandUploadsInFlight keeps 1,000 uploads in flight
// across two instances (500 each), with the tracker in memory and
// shared through Redis: req/s, CPU of both Caddy processes and of
// redis-server per GiB, documents published and Redis round trips per
// upload. One op is one upload, of 256 KiB by default or
// BENCH_UPLOAD_KIB KiB. scripts/cluster-bench.sh runs it in pairs.
//
//	go test -run XXX -bench ThousandUploadsInFlight -benchtime 8000x ./internal/clustertest
func BenchmarkThousandUploadsInFlight(b *testing.B) {
	size := 256 << 10
	if kib, err := strconv.Atoi(os.Getenv("BENCH_UPLOAD_KIB")); err == nil && kib > 0 {
		size = kib << 10
	}
	for _, variant := range []string{"memory", "redis"} {
		b.Run(variant, func(b *testing.B) {
			redisURL, redisPid := "", 0
			if variant == "redis" {
				rs := startRedis(b)
				redisURL, redisPid = rs.URL(), rs.Pid()
			}
			up := newUpstream(b)
			insts := []*instance{
				startInstance(b, "A", redisURL, "", up.host),
				startInstance(b, "B", redisURL, "", up.host),
			}
			for _, inst := range insts {
				inst.client = &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 600}}
			}
			data := payload(size)
			pids := []int{insts[0].cmd.Process.Pid, insts[1].cmd.Process.Pid}
			cpu0, redisCPU0 := cpuSeconds(b, pids...), cpuSeconds(b, redisPid)
			trips0, errors0 := counter(b, insts, "round_trips_total"), counter(b, insts, "errors_total")
			published0 := counter(b, insts, "published_total")
			var next atomic.Int64
			var failed atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for w := range 1000 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					inst := insts[w%2]
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						r := inst.upload(fmt.Sprintf("bench-%d", i), bytes.NewReader(data), int64(size), nil)
						if r.code != http.StatusOK {
							failed.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			took := time.Since(start)
			b.StopTimer()
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d uploads failed", n)
			}
			gib := float64(b.N) * float64(size) / (1 << 30)
			b.ReportMetric(float64(b.N)/took.Seconds(), "req/s")
			b.ReportMetric((cpuSeconds(b, pids...)-cpu0)/gib, "cpu-s/GiB")
			if variant == "redis" {
				b.ReportMetric((cpuSeconds(b, redisPid)-redisCPU0)/gib, "redis-cpu-s/GiB")
				b.ReportMetric(float64(counter(b, insts, "round_trips_total")-trips0)/float64(b.N), "round-trips/upload")
				b.ReportMetric(float64(counter(b, insts, "published_total")-published0)/float64(b.N), "docs/upload")
				b.ReportMetric(float64(counter(b, insts, "errors_total")-errors0), "redis-errors")
			}
		})
	}
}

// cpuSeconds adds up the user and system CPU time of the processes
// (a pid of 0 counts nothing).
func cpuSeconds(b *testing.B, pids ...int) float64 {
	var ticks int64
	for _, pid := range pids {
		if pid == 0 {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			b.Fatal(err)
		}
		// the fields after the command name (which ends with ")")
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += utime + stime
	}
	return float64(ticks) / 100 // USER_HZ
}

// counter adds up the instances' caddy_upload_progress_redis_<name>.
func counter(b *testing.B, insts []*instance, name string) int64 {
	line := regexp.MustCompile(`caddy_upload_progress_redis_` + name + `\{tracker="default"\} (\d+)`)
	var n int64
	for _, inst := range insts {
		if m := line.FindStringSubmatch(get(b, inst.admin+"/metrics")); m != nil {
			v, _ := strconv.ParseInt(m[1], 10, 64)
			n += v
		}
	}
	return n
}
