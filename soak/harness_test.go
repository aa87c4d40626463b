package soak

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testkit"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// payload and sha256Hex are testkit's: deterministic bodies and their
// SHA-256 as the upstream reports it.
var (
	payload   = testkit.Payload
	sha256Hex = testkit.SHA256Hex
)

// The soak and fault campaign runs real Caddy in this process
// (internal/testcaddy) in front of a real upstream, with real clients;
// its tests must not run in parallel. Short by default (CI); the long
// campaign is `soak/run.sh` (see README.md, "Soak, faults and fuzzing").

var (
	flagSeed    = flag.Uint64("soak.seed", 0, "seed of the random soak (0: a new one, printed)")
	flagUploads = flag.Int("soak.uploads", 0, "uploads in the random soak (default 200, or 1000 with -soak.long)")
	flagLong    = flag.Bool("soak.long", false, "the long campaign: full sizes and counts")
	// flagHeapBudget bounds the heap growth of the whole process (Caddy,
	// clients and upstream) while a fault runs. Once upload_progress has
	// max_memory, set it in soakOptions and this to it plus the clients'
	// share.
	flagHeapBudget = flag.Int64("soak.heap-budget", 384<<20, "bytes the process heap may grow while a fault runs")
	// flagStrictRecords fails on the two record bugs the soak found
	// before branch i9-memory fixed them: a final record that changes
	// after it was first read (received grew on after an early answer),
	// and a progress event that carries a final state.
	// -soak.strict-records=false only counts them.
	flagStrictRecords = flag.Bool("soak.strict-records", true, "fail when a final record changes after it was first read, or a progress event carries a final state")
)

func TestMain(m *testing.M) {
	flag.Parse()
	raiseFileLimit()
	os.Exit(testcaddy.Main(m))
}

// raiseFileLimit lifts RLIMIT_NOFILE as far as allowed: 20,000 event
// streams take 40,000 descriptors in this process (both ends).
func raiseFileLimit() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	want := max(lim.Cur, 65536)
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: max(lim.Max, want)}) != nil {
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: lim.Max, Max: lim.Max})
	}
}

// fileLimit is the current RLIMIT_NOFILE.
func fileLimit() uint64 {
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim.Cur
}

// scale picks the CI or the long figure.
func scale(short, long int) int {
	if *flagLong {
		return long
	}
	return short
}

// newRand returns the campaign's seeded randomness, printing the seed
// so that a failure can be replayed with -soak.seed.
func newRand(t *testing.T) *rand.Rand {
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -soak.seed %d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9E3779B97F4A7C15))
}

// retain is how long finished records stay in the soak's Caddy.
const retain = 3 * time.Second

// proxy is Caddy with upload_progress in front of the upstream, over
// HTTP/1.1 and h2c on one port: /throttled/ limits each upload to
// throttleRate, /witness/ to witnessRate, everything else is not
// limited.
type proxy struct {
	base   string
	addr   string
	h1     *http.Client
	h2c    *http.Client
	up     *upstream
	config string

	reloading atomic.Bool // a reload storm is on (faults_test.go)
}

const throttleRate = 4 << 20

// witnessRate limits the witness uploads of the fault tests (/witness/):
// low, so that their pace shows unfairness, not the CPU the test's own
// clients take.
const witnessRate = 1 << 20

// soakOptions go into every upload_progress block of the soak, and so
// do startProxy's extra options: the three handlers share the default
// tracker, so they must agree on its tracker-wide settings.
const soakOptions = "retain 3s\n\t\t\tnginx_report_path /progress\n\t\t\tinterval 50ms"

func startProxy(t *testing.T, extraOptions string) *proxy {
	t.Helper()
	up := newUpstream(t)
	port := testcaddy.FreePort(t)
	p := &proxy{base: fmt.Sprintf("http://127.0.0.1:%d", port), addr: fmt.Sprintf("127.0.0.1:%d", port), up: up}
	p.config = p.caddyfile(extraOptions)
	testcaddy.Run(t, p.config)
	p.h1 = &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}}
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	p.h2c = &http.Client{Transport: &http.Transport{Protocols: &protocols, DisableCompression: true}}
	t.Cleanup(p.closeIdle)
	return p
}

func (p *proxy) caddyfile(extraOptions string) string {
	global := strings.Replace(testcaddy.GlobalOptions, "\tlocal_certs\n", "\tlocal_certs\n\tservers {\n\t\tprotocols h1 h2c\n\t}\n", 1)
	return global + fmt.Sprintf(`%s {
	handle /witness/* {
		upload_progress {
			%s
			rate_limit %d
			%s
		}
		reverse_proxy %s
	}
	handle /throttled/* {
		upload_progress {
			%s
			rate_limit %d
			%s
		}
		reverse_proxy %s {
			transport http {
				keepalive 1s
			}
		}
	}
	handle {
		upload_progress {
			%s
			%s
		}
		reverse_proxy %s {
			transport http {
				keepalive 1s
			}
		}
	}
}
`, p.base, soakOptions, witnessRate, extraOptions, p.up.host, soakOptions, throttleRate, extraOptions, p.up.host, soakOptions, extraOptions, p.up.host)
}

func (p *proxy) closeIdle() {
	p.h1.CloseIdleConnections()
	p.h2c.CloseIdleConnections()
}

// upstream is a real HTTP backend that hashes every body it gets. The
// query of the request says how it behaves:
//
//	?status=N   answer N after reading the body (default 200)
//	?delay=D    wait D after reading the body
//	?reset=N    read N bytes of the body, then reset the connection
//	?noread     answer 200 at once, without reading the body
//	?hold       answer 200 without reading the body, once release is called
//
// and a resumable delivery (whose metadata arrive as headers) with
// Upload-Metadata-Fault: drop-answer gets, after its body is read, 200
// headers and part of the answer, then a reset connection.
type upstream struct {
	*httptest.Server
	host string

	held     chan struct{}
	holdOnce sync.Once

	mu       sync.Mutex
	received map[string]receivedBody
}

type receivedBody struct {
	bytes  int64
	sha256 string
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{received: make(map[string]receivedBody), held: make(chan struct{})}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(u.serve))
	// longer than Caddy's keepalive (upstreamKeepalive), so that Caddy never
	// sends on a connection the upstream is closing
	u.Server.Config.IdleTimeout = 30 * time.Second
	u.Start()
	t.Cleanup(u.Close)
	t.Cleanup(u.release)
	u.host = strings.TrimPrefix(u.URL, "http://")
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("X-Upload-ID")
	q := r.URL.Query()
	if q.Has("hold") {
		<-u.held
	}
	if q.Has("noread") || q.Has("hold") {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `{"early":true}`)
		return
	}
	if r.Header.Get("Upload-Metadata-Fault") == "drop-answer" {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `{"partial"`)
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
		}
		return
	}
	if n, err := strconv.ParseInt(q.Get("reset"), 10, 64); err == nil {
		io.CopyN(io.Discard, r.Body, n)
		rc := http.NewResponseController(w)
		conn, _, err := rc.Hijack()
		if err == nil {
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
		}
		return
	}
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		return // a client that went away: nothing is recorded
	}
	u.mu.Lock()
	u.received[id] = receivedBody{bytes: n, sha256: hex.EncodeToString(h.Sum(nil))}
	u.mu.Unlock()
	if d, err := time.ParseDuration(q.Get("delay")); err == nil {
		time.Sleep(d)
	}
	code := http.StatusOK
	if s, err := strconv.Atoi(q.Get("status")); err == nil {
		code = s
	}
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"bytes":%d}`, n)
}

// release lets every held request answer.
func (u *upstream) release() { u.holdOnce.Do(func() { close(u.held) }) }

// forget drops what the upstream recorded for id, for faults whose
// uploads are too many to keep: the map would grow with every upload
// (some 170 bytes each) and count against the heap's baseline.
func (u *upstream) forget(id string) {
	u.mu.Lock()
	delete(u.received, id)
	u.mu.Unlock()
}

func (u *upstream) get(id string) (receivedBody, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	r, ok := u.received[id]
	return r, ok
}

// status reads an upload's status: its HTTP code and JSON.
func (p *proxy) status(id string) (int, caddyprogress.Status, error) {
	resp, err := p.h1.Get(p.base + caddyprogress.DefaultStatusPath + id)
	if err != nil {
		return 0, caddyprogress.Status{}, err
	}
	defer resp.Body.Close()
	var s caddyprogress.Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return resp.StatusCode, s, fmt.Errorf("decoding the status of %s: %w", id, err)
	}
	return resp.StatusCode, s, nil
}

// finalStatus polls until the upload has a final state.
func (p *proxy) finalStatus(id string, within time.Duration) (caddyprogress.Status, error) {
	deadline := time.Now().Add(within)
	for {
		code, s, err := p.status(id)
		if err == nil && code == http.StatusOK && s.FinishedAt != nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("upload %s: no final state within %s (last: %d %s, err %v)", id, within, code, s.Status, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	name string
	data string
}

// readEvents reads an event stream until it ends or ctx is done.
func readEvents(ctx context.Context, client *http.Client, url string) ([]sseEvent, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("events answered %d", resp.StatusCode)
	}
	var events []sseEvent
	_, err = testkit.ReadEvents(resp.Body, 4<<20, func(e testkit.Event) bool {
		events = append(events, sseEvent{name: e.Name, data: e.Data})
		return true
	})
	return events, err
}

// resources is what the process holds: its baselines are taken before
// a run and compared after.
type resources struct {
	goroutines int
	fds        int
	heap       uint64 // live heap after a GC
}

func measure() resources {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	entries, _ := os.ReadDir("/proc/self/fd")
	return resources{goroutines: runtime.NumGoroutine(), fds: len(entries), heap: ms.HeapAlloc}
}

func (r resources) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, heap %.1f MiB", r.goroutines, r.fds, float64(r.heap)/(1<<20))
}

// backToBaseline waits until goroutines and descriptors are back to
// the baseline (a few of slack for runtime and timer goroutines) and
// the heap within heapSlack of it, or fails with what is left.
func backToBaseline(t *testing.T, p *proxy, base resources) resources {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		p.closeIdle()
		now := measure()
		ok := now.goroutines <= base.goroutines+3 && now.fds <= base.fds+3 &&
			now.heap <= base.heap+heapSlack(base.heap)
		if ok {
			return now
		}
		if time.Now().After(deadline) {
			if path := os.Getenv("SOAK_HEAP_PROFILE"); path != "" {
				if f, err := os.Create(path); err == nil {
					pprof.WriteHeapProfile(f)
					f.Close()
				}
			}
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("not back to the baseline after 30s: now %s, baseline %s\n%s", now, base, buf[:n])
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// heapSlack is how far above its baseline the heap may stay: 10 %, and
// at least 1 MiB. The baseline of this process is small (about 4 MiB),
// and Go maps (net/http's connections, the tracker's records) and
// runtime caches keep some of their largest size after a burst; a leak
// grows past that with every run.
func heapSlack(base uint64) uint64 { return max(base/10, 1<<20) }

// heapWatch samples the heap while a fault runs, for its peak.
type heapWatch struct {
	stop chan struct{}
	done chan uint64
}

func watchHeap() *heapWatch {
	w := &heapWatch{stop: make(chan struct{}), done: make(chan uint64, 1)}
	go func() {
		var peak uint64
		var ms runtime.MemStats
		ticker := time.NewTicker(200 * time.Millisecond)
		defer ticker.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-w.stop:
				w.done <- peak
				return
			case <-ticker.C:
			}
		}
	}()
	return w
}

// peak ends the watch and returns the highest heap seen.
func (w *heapWatch) peak() uint64 {
	close(w.stop)
	return <-w.done
}
