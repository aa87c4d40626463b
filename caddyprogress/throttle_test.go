package caddyprogress

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

func TestRateLimitPerUpload(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "rate_limit 1MiB", up.host)
	data := payload(4 << 20)
	start := time.Now()
	resp, _ := p.upload(t, http.MethodPost, "/", strings.NewReader(string(data)), int64(len(data)), http.Header{"X-Upload-Id": {"limited"}})
	took := time.Since(start)
	if resp.StatusCode != 200 {
		t.Fatalf("throttled upload answered %d", resp.StatusCode)
	}
	if took < 3600*time.Millisecond || took > 4400*time.Millisecond {
		t.Fatalf("4 MiB at 1 MiB/s took %s, want 4s ±10%%", took)
	}
	if got, _ := up.get("limited"); got.sha256 != sha256Hex(data) {
		t.Fatalf("throttled upload arrived altered")
	}
	s := p.waitForStatus(t, "limited", "complete")
	if s.RateLimit == nil || *s.RateLimit != 1<<20 {
		t.Fatalf("rate_limit in status = %v, want %d", s.RateLimit, 1<<20)
	}
}

func TestRateLimitTotalIsSharedFairly(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "rate_limit_total 2MiB", up.host)
	const uploads, size = 4, 2 << 20
	data := payload(size)
	took := make([]time.Duration, uploads)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range uploads {
		wg.Go(func() {
			id := fmt.Sprintf("shared-%d", i)
			resp, _ := p.upload(t, http.MethodPost, "/", strings.NewReader(string(data)), size, http.Header{"X-Upload-Id": {id}})
			took[i] = time.Since(start)
			if resp.StatusCode != 200 {
				t.Errorf("upload %d answered %d", i, resp.StatusCode)
			}
			if got, _ := up.get(id); got.sha256 != sha256Hex(data) {
				t.Errorf("upload %d arrived altered", i)
			}
		})
	}
	wg.Wait()
	all := time.Since(start)
	var mean time.Duration
	for _, d := range took {
		mean += d / uploads
	}
	for i, d := range took {
		if math.Abs(float64(d-mean)) > 0.15*float64(mean) {
			t.Errorf("upload %d took %s, more than 15%% from the mean %s (all: %v)", i, d, mean, took)
		}
	}
	totalRate := float64(uploads*size) / all.Seconds()
	if want := float64(2 << 20); math.Abs(totalRate-want) > 0.10*want {
		t.Fatalf("total rate %.0f B/s, want %.0f ±10%%", totalRate, want)
	}
}

// Uploads sharing rate_limit_total get equal shares even when their
// reads differ in size: here one reads 32 KiB at a time and one 4 KiB
// (paid read by read, the first would get 8 times the second's share).
func TestSharedBucketIsFairWhateverTheReadSizes(t *testing.T) {
	const rate, run = 4 << 20, 1500 * time.Millisecond
	total := newLimiter(rate, defaultBurst(rate))
	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()
	readSizes := []int{32 << 10, 4 << 10}
	passed := make([]int, len(readSizes))
	var wg sync.WaitGroup
	for i, n := range readSizes {
		th := newThrottle(nil, total)
		wg.Go(func() {
			for {
				if _, err := th.wait(ctx, n, false); err != nil {
					return
				}
				passed[i] += n
			}
		})
	}
	wg.Wait()
	mean := float64(passed[0]+passed[1]) / 2
	for i, got := range passed {
		if math.Abs(float64(got)-mean) > 0.15*mean {
			t.Errorf("reads of %d bytes passed %d bytes, more than 15%% from the mean %.0f (all: %v)", readSizes[i], got, mean, passed)
		}
	}
}

// A body's last bytes pay what is still owed to the shared bucket, so a
// short upload is not let through at full speed either.
func TestSharedBucketIsPaidInFullWhenTheBodyEnds(t *testing.T) {
	const rate = 64 << 10
	total := newLimiter(rate, defaultBurst(rate))
	th := newThrottle(nil, total)
	start := time.Now()
	for range 3 {
		if _, err := th.wait(context.Background(), 10<<10, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := th.wait(context.Background(), 10<<10, true); err != nil {
		t.Fatal(err)
	}
	// 40 KiB at 64 KiB/s from an empty bucket: 0.625 s
	if took := time.Since(start); took < 550*time.Millisecond {
		t.Fatalf("40 KiB passed in %s at 64 KiB/s; want about 625ms", took)
	}
	if th.owed != 0 {
		t.Fatalf("%d bytes still owed after the body ended", th.owed)
	}
}

// goroutinesIn counts the goroutines running code of this package, other
// than the trackers' sweepers.
func goroutinesIn() (int, string) {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	var stacks []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "caddyprogress.(*") && !strings.Contains(g, "caddyprogress.(*tracker).sweep") {
			n++
			stacks = append(stacks, g)
		}
	}
	return n, strings.Join(stacks, "\n\n")
}

// A client that leaves mid-throttle is released within a second: over
// HTTP/1 a connection reset (a client whose connection breaks, or that
// aborts it), over HTTP/2 a cancelled stream. Over HTTP/1 the kernel still
// hands over what it had queued before the reset (about 90 KiB here) at
// the limited rate, so the rate is 256 KiB/s: 4 MiB would take 16 s.
// (A client that closes its HTTP/1 connection gracefully has its kernel
// deliver all it had already sent before the end shows.)
func TestClientLeavingMidThrottleIsReleased(t *testing.T) {
	up := newUpstream(t)
	t.Run("HTTP/1 reset", func(t *testing.T) {
		p := startProxy(t, "rate_limit 256KiB", up.host)
		conn, err := net.Dial("tcp", strings.TrimPrefix(p.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: %s\r\nX-Upload-ID: leaves-h1\r\nContent-Length: %d\r\n\r\n", conn.RemoteAddr(), 4<<20)
		go conn.Write(payload(4 << 20)) // blocks on backpressure until the reset
		p.waitFor(t, "leaves-h1", "throttled progress", func(_ int, s Status) bool { return s.Received > 256<<10 })
		conn.(*net.TCPConn).SetLinger(0) // close with a reset
		conn.Close()
		assertReleased(t, p, "leaves-h1")
	})
	t.Run("HTTP/2 cancel", func(t *testing.T) {
		port := testcaddy.FreePort(t)
		site := fmt.Sprintf("https://127.0.0.1:%d", port)
		testcaddy.Run(t, testcaddy.GlobalOptions+siteBlock(site, "rate_limit 64KiB", up.host))
		p := &proxy{base: site, client: h2Client()}
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, site+"/", strings.NewReader(string(payload(4<<20))))
		req.Header.Set("X-Upload-ID", "leaves-h2")
		done := make(chan struct{})
		go func() {
			defer close(done)
			if resp, err := p.client.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		p.waitFor(t, "leaves-h2", "throttled progress", func(_ int, s Status) bool { return s.Received > 64<<10 })
		cancel()
		assertReleased(t, p, "leaves-h2")
		<-done
	})
}

// assertReleased checks that an upload whose client just left ends as
// aborted within a second, and leaves no goroutine of this package behind.
func assertReleased(t *testing.T, p *proxy, id string) {
	t.Helper()
	left := time.Now()
	s := p.waitForStatus(t, id, "aborted")
	if ended := time.Since(left); ended > time.Second {
		t.Fatalf("upload ended as aborted %s after the client left, want within a second (finished_at %s after; %+v)", ended, s.FinishedAt.Sub(left), s)
	}
	if s.Error == "" {
		t.Fatalf("aborted status without an error: %+v", s)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, stacks := goroutinesIn()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of this package left behind:\n%s", n, stacks)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestThrottledHTTP2StreamDoesNotSlowItsConnection(t *testing.T) {
	up := newUpstream(t)
	port := testcaddy.FreePort(t)
	site := fmt.Sprintf("https://127.0.0.1:%d", port)
	testcaddy.Run(t, testcaddy.GlobalOptions+siteBlock(site, "rate_limit 128KiB", up.host))
	client := h2Client()
	p := &proxy{base: site, client: client}

	body := &pacedReader{data: payload(512 << 10), chunk: 32 << 10}
	done := make(chan *http.Response, 1)
	go func() {
		resp, _ := p.upload(t, http.MethodPost, "/", body, 512<<10, http.Header{"X-Upload-Id": {"slow-stream"}})
		done <- resp
	}()
	p.waitFor(t, "slow-stream", "throttled progress", func(_ int, s Status) bool { return s.Received > 64<<10 })

	for range 5 {
		var reused bool
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, site+DefaultStatusPath+"slow-stream", nil)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if took := time.Since(start); took > 500*time.Millisecond {
			t.Fatalf("status poll on the throttled upload's connection took %s", took)
		}
		if resp.ProtoMajor != 2 || !reused {
			t.Fatalf("poll went over HTTP/%d on a new connection (reused %v), want the upload's HTTP/2 connection", resp.ProtoMajor, reused)
		}
		if s := p.waitForStatus(t, "slow-stream", "uploading"); s.Received >= 512<<10 {
			t.Fatalf("upload finished before the polls; not throttled?")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if resp := <-done; resp.StatusCode != 200 {
		t.Fatalf("throttled HTTP/2 upload answered %d", resp.StatusCode)
	}
}
