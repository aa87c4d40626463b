package clustertest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"runtime"
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
// shared through Redis. Both pairs of Caddy processes run side by side
// for the whole benchmark and take turns, in rounds of
// BENCH_ROUND_UPLOADS uploads (default 2,000), in alternating order
// (memory first, then Redis first, ...): a pair that ran in separate
// runs, one after the other, saw a different machine (memory against
// memory so measured differed by up to 9%; the second run was slower).
// Reported for each: req/s and CPU of both Caddy processes per GiB over
// all its rounds; for Redis also redis-server's CPU per GiB, documents
// published and round trips per upload, and the ratio of the req/s;
// and the machine's idle CPU during each pair's rounds. When it is near
// 0, throughput follows CPU, and est-redis/memory-redis-elsewhere
// estimates the ratio had redis-server run on cores of its own (its
// CPU time taken off the Redis pair's time): an estimate for a
// deployment, where Redis runs elsewhere, not a measurement.
// One op is one upload, of 256 KiB by default or BENCH_UPLOAD_KIB KiB.
// scripts/cluster-bench.sh runs it several times.
//
//	go test -run XXX -bench ThousandUploadsInFlight -benchtime 20000x ./internal/clustertest
func BenchmarkThousandUploadsInFlight(b *testing.B) {
	size := 256 << 10
	if kib, err := strconv.Atoi(os.Getenv("BENCH_UPLOAD_KIB")); err == nil && kib > 0 {
		size = kib << 10
	}
	round := 2000
	if n, err := strconv.Atoi(os.Getenv("BENCH_ROUND_UPLOADS")); err == nil && n > 0 {
		round = n
	}
	rs := startRedis(b)
	variants := []*benchVariant{newBenchVariant(b, "memory", "", 0), newBenchVariant(b, "redis", rs.URL(), rs.Pid())}
	data := payload(size)
	var next atomic.Int64
	for _, v := range variants { // warm up: connections, caches
		v.run(b, &next, data, 1000)
		v.sum = benchSum{}
	}
	b.ResetTimer()
	for r, done := 0, 0; done < b.N; r++ {
		n := min(round, b.N-done)
		for i := range variants {
			v := variants[(i+r)%2] // who goes first alternates
			v.run(b, &next, data, n)
		}
		done += n
	}
	b.StopTimer()
	gib := float64(b.N) * float64(size) / (1 << 30)
	mem, red := variants[0], variants[1]
	b.ReportMetric(float64(b.N)/mem.sum.took.Seconds(), "memory-req/s")
	b.ReportMetric(float64(b.N)/red.sum.took.Seconds(), "redis-req/s")
	b.ReportMetric(mem.sum.took.Seconds()/red.sum.took.Seconds(), "redis/memory")
	b.ReportMetric(mem.sum.cpu/gib, "memory-cpu-s/GiB")
	b.ReportMetric(red.sum.cpu/gib, "redis-caddy-cpu-s/GiB")
	b.ReportMetric(red.sum.redisCPU/gib, "redis-server-cpu-s/GiB")
	b.ReportMetric(float64(red.sum.trips)/float64(b.N), "round-trips/upload")
	b.ReportMetric(float64(red.sum.published)/float64(b.N), "docs/upload")
	b.ReportMetric(float64(counter(b, red.insts, "errors_total")), "redis-errors")
	cores := float64(runtime.NumCPU())
	b.ReportMetric(100*mem.sum.idle/(cores*mem.sum.took.Seconds()), "memory-idle-%")
	b.ReportMetric(100*red.sum.idle/(cores*red.sum.took.Seconds()), "redis-idle-%")
	// With the cores busy all along (idle near 0), the Redis pair's rounds
	// would have taken redis-server's CPU time / cores less, had Redis run
	// on other cores, as it does in a deployment: an estimate, not a
	// measurement.
	b.ReportMetric(mem.sum.took.Seconds()/(red.sum.took.Seconds()-red.sum.redisCPU/cores), "est-redis/memory-redis-elsewhere")
}

// benchVariant is one pair of instances of BenchmarkThousandUploadsInFlight
// and what its rounds added up to.
type benchVariant struct {
	name     string
	insts    []*instance
	pids     []int
	redisPid int // 0: in memory
	sum      benchSum
}

// benchSum is what a variant's rounds add up to.
type benchSum struct {
	took      time.Duration
	cpu       float64 // both Caddy processes, seconds
	redisCPU  float64 // redis-server, seconds
	trips     int64
	published int64
	idle      float64 // the machine's idle CPU, seconds
}

func newBenchVariant(b *testing.B, name, redisURL string, redisPid int) *benchVariant {
	up := newUpstream(b)
	v := &benchVariant{name: name, redisPid: redisPid, insts: []*instance{
		startInstance(b, name+"-A", redisURL, "", up.host),
		startInstance(b, name+"-B", redisURL, "", up.host),
	}}
	for _, inst := range v.insts {
		inst.client = &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 600}}
		v.pids = append(v.pids, inst.cmd.Process.Pid)
	}
	return v
}

// run makes n uploads through v, 1,000 at a time, and adds up its
// time, CPU and (with Redis) counters.
func (v *benchVariant) run(b *testing.B, next *atomic.Int64, data []byte, n int) {
	idle0 := idleSeconds(b)
	cpu0, redisCPU0 := cpuSeconds(b, v.pids...), cpuSeconds(b, v.redisPid)
	var trips0, published0 int64
	if v.redisPid != 0 {
		trips0, published0 = counter(b, v.insts, "round_trips_total"), counter(b, v.insts, "published_total")
	}
	var left atomic.Int64
	left.Store(int64(n))
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inst := v.insts[w%2]
			for left.Add(-1) >= 0 {
				r := inst.upload(fmt.Sprintf("bench-%d", next.Add(1)), bytes.NewReader(data), int64(len(data)), nil)
				if r.code != http.StatusOK {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	v.sum.took += time.Since(start)
	v.sum.idle += idleSeconds(b) - idle0
	if k := failed.Load(); k > 0 {
		b.Fatalf("%s: %d uploads failed", v.name, k)
	}
	v.sum.cpu += cpuSeconds(b, v.pids...) - cpu0
	if v.redisPid != 0 {
		v.sum.redisCPU += cpuSeconds(b, v.redisPid) - redisCPU0
		v.sum.trips += counter(b, v.insts, "round_trips_total") - trips0
		v.sum.published += counter(b, v.insts, "published_total") - published0
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

// idleSeconds is the machine's idle and iowait CPU time so far, from
// the first line of /proc/stat ("cpu user nice system idle iowait ...").
func idleSeconds(b *testing.B) float64 {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(stat[:bytes.IndexByte(stat, '\n')]))
	idle, _ := strconv.ParseInt(f[4], 10, 64)
	iowait, _ := strconv.ParseInt(f[5], 10, 64)
	return float64(idle+iowait) / 100 // USER_HZ
}

// counter adds up the instances' caddy_upload_progress_redis_<name>.
func counter(b testing.TB, insts []*instance, name string) int64 {
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
