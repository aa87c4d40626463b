package soak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// Each fault runs against a fresh Caddy. While it runs, a witness upload
// (throttled to witnessRate) must keep 90 % of the throughput it had
// before the fault (asserted without -race only), the heap must stay within -soak.heap-budget of the
// baseline, and afterwards goroutines, descriptors and heap must come
// back to the baseline, with no record left after retain.

// witnessSize takes about a second at witnessRate.
const witnessSize = witnessRate

// faultRun is one fault's checks around it.
type faultRun struct {
	t     *testing.T
	px    *proxy
	base  resources
	calm  float64 // the witness's bytes per second before the fault
	heap  *heapWatch
	count int
}

func beginFault(t *testing.T, px *proxy) *faultRun {
	t.Helper()
	f := &faultRun{t: t, px: px}
	// what is made once is in the baseline; its record, still retained,
	// is too, so the baseline is if anything above what end finds once
	// retain has passed (end waits for it)
	f.witnessUpload("warm")
	px.closeIdle()
	time.Sleep(200 * time.Millisecond)
	f.base = measure()
	f.calm = f.witnessUpload("calm")
	t.Logf("baseline %s; witness %.2f MiB/s", f.base, f.calm/(1<<20))
	f.heap = watchHeap()
	return f
}

// witnessUpload sends a throttled upload and returns its throughput,
// failing if it does not arrive intact and complete.
func (f *faultRun) witnessUpload(name string) float64 {
	f.t.Helper()
	f.count++
	id := fmt.Sprintf("witness-%s-%d", name, f.count)
	return f.px.throttledUpload(f.t, id)
}

func (px *proxy) throttledUpload(t *testing.T, id string) float64 {
	t.Helper()
	data := payload(uint64(len(id)), witnessSize)
	start := time.Now()
	var resp *http.Response
	var err error
	for attempt := 1; ; attempt++ {
		req, _ := http.NewRequest(http.MethodPost, px.base+"/witness/upload", strings.NewReader(string(data)))
		req.Header.Set("X-Upload-ID", id)
		resp, err = px.h1.Do(req)
		if err == nil {
			break
		}
		// During a reload storm, a connection can fail before any answer:
		// a reload closes the old server's idle connections (a POST sent
		// on one as it closes fails, and Go's client does not retry it),
		// and new connections are reset while Caddy swaps its listeners.
		// Neither is an upload lost by the proxy: the storm's own uploads
		// count them, and the witness tries again on a new connection.
		if !px.reloading.Load() || attempt == 3 {
			t.Errorf("witness %s: %v", id, err)
			return 0
		}
		t.Logf("witness %s: %v; again on a new connection", id, err)
		px.h1.CloseIdleConnections()
		start = time.Now()
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	got, _ := px.up.get(id)
	s, err := px.finalStatus(id, 10*time.Second)
	if err != nil || resp.StatusCode != 200 || s.Status != "complete" || got.sha256 != sha256Hex(data) {
		t.Fatalf("witness %s: answered %d, record %s (%v), upstream %d bytes", id, resp.StatusCode, s.Status, err, got.bytes)
	}
	return float64(witnessSize) / took.Seconds()
}

// witness runs the witness while the fault is on, and checks its pace.
func (f *faultRun) witness() {
	f.t.Helper()
	during := f.witnessUpload("during")
	f.t.Logf("witness during the fault: %.2f MiB/s (%.0f %% of calm)", during/(1<<20), during/f.calm*100)
	if during < 0.9*f.calm && raceDetector {
		f.t.Logf("(the race detector is on: the pace is not asserted)")
	} else if during < 0.9*f.calm {
		f.t.Errorf("the witness upload slowed to %.2f MiB/s during the fault, below 90 %% of %.2f MiB/s", during/(1<<20), f.calm/(1<<20))
	}
}

// end checks the heap's peak, waits for retain, and checks that the
// process is back to its baseline.
func (f *faultRun) end() {
	f.t.Helper()
	peak := f.heap.peak()
	f.t.Logf("peak heap %.1f MiB (baseline %.1f MiB)", float64(peak)/(1<<20), float64(f.base.heap)/(1<<20))
	if growth := int64(peak) - int64(f.base.heap); growth > *flagHeapBudget {
		f.t.Errorf("the heap grew by %.1f MiB during the fault, over the budget of %.1f MiB", float64(growth)/(1<<20), float64(*flagHeapBudget)/(1<<20))
	}
	time.Sleep(retain + 500*time.Millisecond)
	after := backToBaseline(f.t, f.px, f.base)
	f.t.Logf("after retain: %s", after)
}

// inParallel runs do(0) to do(n-1) on the given number of goroutines.
// (Not a goroutine each: Go keeps every goroutine it ever had at once,
// and 150,000 of them would stay in the heap as some 70 MiB.)
func inParallel(n, workers int, do func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, workers) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				do(i)
			}
		})
	}
	wg.Wait()
}

// generatedBody is size deterministic pseudo-random bytes, made as they
// are read.
func generatedBody(seed uint64, size int64) io.Reader {
	return &generated{r: rand.New(rand.NewPCG(seed, 2)), left: size}
}

// rawUpload opens an HTTP/1.1 connection and sends an upload's header.
func (px *proxy) rawUpload(t *testing.T, id string, length int, query string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", px.addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /upload%s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Upload-ID: %s\r\nContent-Length: %d\r\n\r\n", query, id, length)
	return conn
}

func TestFaultUpstreamResetsMidBody(t *testing.T) {
	px := startProxy(t, "")
	f := beginFault(t, px)
	n := scale(40, 400)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			id := fmt.Sprintf("reset-%d", i)
			req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("%s/upload?reset=%d", px.base, 64<<10), generatedBody(uint64(i), 4<<20))
			req.ContentLength = 4 << 20
			req.Header.Set("X-Upload-ID", id)
			if resp, err := px.h1.Do(req); err == nil {
				resp.Body.Close()
			}
			if s, err := px.finalStatus(id, 10*time.Second); err != nil || s.Status != "error" || s.Error != "upstream connection failed" {
				t.Errorf("%s: %s %q (%v), want error %q", id, s.Status, s.Error, err, "upstream connection failed")
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	f.witness()
	wg.Wait()
	f.end()
}

func TestFaultUpstreamNeverReads(t *testing.T) {
	px := startProxy(t, "")
	f := beginFault(t, px)
	n := scale(16, 200)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("held-%d", i)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, px.base+"/upload?hold", generatedBody(uint64(i), 16<<20))
			req.ContentLength = 16 << 20
			req.Header.Set("X-Upload-ID", id)
			client := px.h1
			if i%2 == 1 {
				client = px.h2c
			}
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
				t.Errorf("%s: answered %d while the upstream held it", id, resp.StatusCode)
			}
		})
	}
	wg.Wait() // every client gave up after a second
	// over h2c the stream reset shows at once
	for i := 1; i < n; i += 2 {
		id := fmt.Sprintf("held-%d", i)
		if s, err := px.finalStatus(id, 3*time.Second); err != nil || s.Status != "aborted" {
			t.Errorf("%s over h2c, while the upstream still holds it: %s (%v), want aborted", id, s.Status, err)
		}
	}
	f.witness()
	px.up.release()
	for i := range n {
		id := fmt.Sprintf("held-%d", i)
		if s, err := px.finalStatus(id, 10*time.Second); err != nil || s.Status != "aborted" || s.Error != "client went away" {
			t.Errorf("%s: %s %q (%v), want aborted, never complete", id, s.Status, s.Error, err)
		}
	}
	f.end()
}

func TestFaultSlowlorisAndSlowReaders(t *testing.T) {
	px := startProxy(t, "")
	f := beginFault(t, px)
	n := scale(40, 400)
	seconds := scale(4, 30)
	// slow readers: event streams of the next witness that never read
	var readers []net.Conn
	for range scale(40, 400) {
		c, err := dialEvents(px, fmt.Sprintf("witness-during-%d", f.count+1), 4096)
		if errors.Is(err, errStreamRefused) {
			continue // past max_subscribers_per_upload
		}
		if err != nil {
			t.Fatal(err)
		}
		readers = append(readers, c)
	}
	t.Logf("%d slow readers on the witness", len(readers))
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = px.rawUpload(t, fmt.Sprintf("slowloris-%d", i), 1<<20, "")
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // one byte a second on each
		ticker := time.NewTicker(time.Second)
		defer ticker.Stop()
		for {
			for _, c := range conns {
				c.Write([]byte{'x'})
			}
			select {
			case <-stop:
				return
			case <-ticker.C:
			}
		}
	})
	f.witness()
	time.Sleep(time.Duration(seconds) * time.Second)
	close(stop)
	wg.Wait()
	_, s, _ := px.status("slowloris-0")
	if s.Status != "uploading" || s.Received < 2 || s.Received > int64(seconds)+3 {
		t.Errorf("slowloris upload after %ds: %s with %d bytes", seconds, s.Status, s.Received)
	}
	for _, c := range append(conns, readers...) {
		c.Close()
	}
	for i := range n {
		id := fmt.Sprintf("slowloris-%d", i)
		if s, err := px.finalStatus(id, 10*time.Second); err != nil || s.Status != "aborted" {
			t.Errorf("%s: %s (%v), want aborted", id, s.Status, err)
		}
	}
	f.end()
}

// errStreamRefused is a 503 for an event stream: past max_subscribers or
// max_subscribers_per_upload.
var errStreamRefused = errors.New("event stream refused with 503")

// dialEvents opens an event stream (with a small receive buffer if
// rcvbuf > 0), reads the start of its answer, and then never reads again.
func dialEvents(px *proxy, id string, rcvbuf int) (net.Conn, error) {
	conn, err := net.Dial("tcp", px.addr)
	if err != nil {
		return nil, err
	}
	if rcvbuf > 0 {
		conn.(*net.TCPConn).SetReadBuffer(rcvbuf)
	}
	fmt.Fprintf(conn, "GET %s%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", caddyprogress.DefaultEventsPath, id)
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 12)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "HTTP/1.1 200" {
		conn.Close()
		if string(buf) == "HTTP/1.1 503" {
			return nil, errStreamRefused
		}
		return nil, fmt.Errorf("event stream %s: %q %v", id, buf, err)
	}
	return conn, nil
}

func TestFaultManyEventStreams(t *testing.T) {
	px := startProxy(t, "")
	n := scale(2000, 20000)
	if limit := int(fileLimit()); 2*n+200 > limit {
		t.Logf("RLIMIT_NOFILE is %d: %d streams instead of %d", limit, (limit-200)/2, n)
		n = (limit - 200) / 2
	}
	// net/http keeps its map of connections at its largest size: a first
	// round puts that in the baseline, and the second must come back to it
	openAndDrop(t, px, n, nil)
	f := beginFault(t, px)
	openAndDrop(t, px, n, f.witness)
	f.end()
}

// openAndDrop opens n event streams, runs during (if any) while they are
// all open, and closes them at once.
func openAndDrop(t *testing.T, px *proxy, n int, during func()) {
	conns := make([]net.Conn, n)
	start := time.Now()
	var refused atomic.Int64
	inParallel(n, 64, func(i int) {
		c, err := dialEvents(px, fmt.Sprintf("stream-%d", i%1000), 0)
		if errors.Is(err, errStreamRefused) {
			refused.Add(1) // past max_subscribers
			return
		}
		if err != nil {
			t.Error(err)
			return
		}
		conns[i] = c
	})
	t.Logf("%d event streams asked for in %s, %d refused with 503 (max_subscribers)", n, time.Since(start).Round(time.Millisecond), refused.Load())
	if during != nil {
		during()
	}
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

func TestFaultReservationFlood(t *testing.T) {
	px := startProxy(t, "")
	n := scale(5000, 150000) // past max_reservations (10,000) in the long run
	// the tracker's map keeps its largest size (Go maps do not shrink): a
	// first round puts that in the baseline, and the second must come back
	// to it
	reserve(t, px, n, nil)
	time.Sleep(retain + 500*time.Millisecond)
	f := beginFault(t, px)
	reserve(t, px, n, f.witness)
	f.end()
}

// reserve floods the tracker with n reservations, running during (if
// any) while they go on.
func reserve(t *testing.T, px *proxy, n int, during func()) {
	var refused atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		inParallel(n, 32, func(int) {
			resp, err := px.h1.Post(px.base+caddyprogress.DefaultStatusPath, "", nil)
			if err != nil {
				t.Errorf("reserving: %v", err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch {
			case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
				refused.Add(1) // past max_reservations
			case resp.StatusCode != http.StatusCreated:
				t.Errorf("reserving: %d", resp.StatusCode)
			}
		})
	}()
	if during != nil {
		during()
	}
	<-done
	t.Logf("%d reservations, %d refused with 503 (max_reservations)", n, refused.Load())
}

func TestFaultGroupOfManyMembers(t *testing.T) {
	px := startProxy(t, "max_group_uploads 10000")
	f := beginFault(t, px)
	n := scale(500, 5000)
	const size = 4096
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var events []sseEvent
	var eventsErr error
	var watchers sync.WaitGroup
	watchers.Go(func() {
		events, eventsErr = readEvents(ctx, px.h1, px.base+caddyprogress.DefaultEventsPath+"?group=big")
	})
	time.Sleep(50 * time.Millisecond)
	members := make(chan struct{})
	go func() {
		defer close(members)
		inParallel(n, 32, func(i int) {
			req, _ := http.NewRequest(http.MethodPost, px.base+"/upload", strings.NewReader(string(payload(uint64(i), size))))
			req.Header.Set("X-Upload-ID", fmt.Sprintf("member-%d", i))
			req.Header.Set("X-Upload-Group", "big")
			resp, err := px.h1.Do(req)
			if err != nil {
				t.Errorf("member %d: %v", i, err)
				return
			}
			resp.Body.Close()
		})
	}()
	f.witness()
	<-members
	resp, err := px.h1.Get(px.base + caddyprogress.DefaultStatusPath + "?group=big")
	if err != nil {
		t.Fatal(err)
	}
	var g caddyprogress.GroupStatus
	json.NewDecoder(resp.Body).Decode(&g)
	resp.Body.Close()
	if g.Status != "complete" || len(g.Uploads) != n || g.Received != int64(n*size) {
		t.Errorf("group: %s with %d members, %d bytes; want complete, %d, %d", g.Status, len(g.Uploads), g.Received, n, n*size)
	}
	// the group's stream ends when every member has: it ended complete
	cancel()
	watchers.Wait()
	t.Logf("group stream: %d events (%v)", len(events), eventsErr)
	f.end()
}

func TestFaultMultipartOfManyParts(t *testing.T) {
	px := startProxy(t, "")
	f := beginFault(t, px)
	n := scale(8, 100)
	const parts = 1000
	name := strings.Repeat("n", 300) // cut to 256 bytes in the status
	var body strings.Builder
	for i := range parts {
		fmt.Fprintf(&body, "--B\r\nContent-Disposition: form-data; name=\"%s%d\"; filename=\"%s%d\"\r\n\r\n%d\r\n", name, i, name, i, i)
	}
	body.WriteString("--B--\r\n")
	form := body.String()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			id := fmt.Sprintf("parts-%d", i)
			req, _ := http.NewRequest(http.MethodPost, px.base+"/upload", strings.NewReader(form))
			req.Header.Set("X-Upload-ID", id)
			req.Header.Set("Content-Type", "multipart/form-data; boundary=B")
			resp, err := px.h1.Do(req)
			if err != nil {
				t.Errorf("%s: %v", id, err)
				return
			}
			resp.Body.Close()
			s, err := px.finalStatus(id, 10*time.Second)
			got, _ := px.up.get(id)
			if err != nil || s.Status != "complete" || len(s.Files) != parts || len(s.Files[0].Field) != 256 || got.sha256 != sha256Hex([]byte(form)) {
				t.Errorf("%s: %s with %d parts (%v), upstream %d bytes", id, s.Status, len(s.Files), err, got.bytes)
			}
		})
	}
	f.witness()
	wg.Wait()
	f.end()
}

func TestFaultReloadStorm(t *testing.T) {
	px := startProxy(t, "")
	// a storm leaves some heap behind once (the tracker's slots for
	// finished records and net/http's buffers at their largest, some
	// 0.4 MiB in the long run's profiles, the same after every later
	// storm): a first storm puts that in the baseline, and the second,
	// as long, must come back to it, so what grows with every reload or
	// upload still fails
	storm := time.Duration(scale(3, 30)) * time.Second
	reloadStorm(t, px, storm, nil)
	f := beginFault(t, px) // waits for retain before its baseline
	reloadStorm(t, px, storm, f.witness)
	f.end()
}

// reloadStorm reloads the config every 100 ms for storm while 4 clients
// upload, running during (if any) while it goes on.
func reloadStorm(t *testing.T, px *proxy, storm time.Duration, during func()) {
	px.reloading.Store(true)
	defer func() {
		px.h1.CloseIdleConnections() // the reloads closed them on the server's side
		px.reloading.Store(false)
	}()
	stop := make(chan struct{})
	var reloads atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		ticker := time.NewTicker(100 * time.Millisecond)
		defer ticker.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ticker.C:
				testcaddy.Load(t, px.config)
				reloads.Add(1)
			}
		}
	})
	// new connections for each upload: a reload closes the old server's
	// idle connections, and a POST sent on one as it closes fails in any
	// client (Go's does not retry it)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	var uploads, refused atomic.Int64
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("storm-%d-%d", w, i)
				data := payload(uint64(i), 64<<10+i*4096%(2<<20))
				req, _ := http.NewRequest(http.MethodPost, px.base+"/upload", strings.NewReader(string(data)))
				req.Header.Set("X-Upload-ID", id)
				resp, err := client.Do(req)
				if err != nil { // the connection failed: never a record that says complete
					if refused.Add(1) == 1 {
						t.Logf("first failed connection: %v", err)
					}
					if code, s, _ := px.status(id); code == http.StatusOK && s.Status == "complete" {
						if got, _ := px.up.get(id); got.sha256 != sha256Hex(data) {
							t.Errorf("%s: %v, but its record is complete", id, err)
						}
					}
					px.up.forget(id)
					continue
				}
				resp.Body.Close()
				got, _ := px.up.get(id)
				s, err := px.finalStatus(id, 10*time.Second)
				if resp.StatusCode != 200 || err != nil || s.Status != "complete" || got.sha256 != sha256Hex(data) {
					t.Errorf("%s during the reload storm: answered %d, record %s (%v)", id, resp.StatusCode, s.Status, err)
				}
				px.up.forget(id)
				uploads.Add(1)
			}
		})
	}
	start := time.Now()
	if during != nil {
		during()
	}
	time.Sleep(storm - time.Since(start))
	close(stop)
	wg.Wait()
	t.Logf("%d reloads, %d uploads during the storm, %d more failed to connect", reloads.Load(), uploads.Load(), refused.Load())
}

func TestFaultStopUnderLoad(t *testing.T) {
	px := startProxy(t, "")
	base := measure()
	n := 8
	var wg sync.WaitGroup
	streams := make([]error, n)
	for i := range n {
		id := fmt.Sprintf("stopping-%d", i)
		wg.Go(func() {
			_, streams[i] = readEvents(context.Background(), px.h1, px.base+caddyprogress.DefaultEventsPath+id)
		})
		wg.Go(func() { // intact, stop or not
			data := payload(uint64(i), witnessSize)
			req, _ := http.NewRequest(http.MethodPost, px.base+"/throttled/upload", strings.NewReader(string(data)))
			req.Header.Set("X-Upload-ID", id)
			resp, err := px.h1.Do(req)
			if err != nil {
				t.Errorf("%s: %v", id, err)
				return
			}
			resp.Body.Close()
			if got, _ := px.up.get(id); resp.StatusCode != 200 || got.sha256 != sha256Hex(data) {
				t.Errorf("%s: answered %d, upstream got %d bytes", id, resp.StatusCode, got.bytes)
			}
		})
	}
	for i := range n { // every upload in flight
		id := fmt.Sprintf("stopping-%d", i)
		deadline := time.Now().Add(10 * time.Second)
		for code, s, _ := px.status(id); code != http.StatusOK || s.Status != "uploading"; code, s, _ = px.status(id) {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not start: %d %s", id, code, s.Status)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	start := time.Now()
	if err := caddy.Stop(); err != nil {
		t.Fatalf("caddy stop: %v", err)
	}
	took := time.Since(start)
	wg.Wait()
	t.Logf("caddy stop with %d uploads in flight took %s", n, took.Round(time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("caddy stop took %s with uploads of about a second in flight", took)
	}
	px.closeIdle()
	deadline := time.Now().Add(10 * time.Second)
	for now := measure(); now.goroutines > base.goroutines || now.fds > base.fds; now = measure() {
		if time.Now().After(deadline) {
			t.Fatalf("after caddy stop: %s, before %s", now, base)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
