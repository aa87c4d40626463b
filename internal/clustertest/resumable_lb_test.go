package clustertest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testkit"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

// Resumable uploads behind a load balancer (docs/resumable.md, "Behind a
// load balancer"): two Caddy instances share one upload folder and the
// tracker's Redis, and a third Caddy process in front of them sends the
// requests round robin.

// sharedFolderOptions is the resumable block of each instance: one
// folder for both.
func sharedFolderOptions(dir string) string {
	return "\t\tresumable /files/ {\n\t\t\tdir " + dir + "\n\t\t\tdeliver_to /upload\n\t\t}"
}

// lbHost is the Host of the requests these tests send straight to an
// instance: one for both (the site addresses of the instances differ in
// their port only), as a load balancer passes the client's on.
const lbHost = "127.0.0.1"

// deliveries is a backend that keeps every delivery it got, whole or
// cut short.
type deliveries struct {
	*httptest.Server
	pace    time.Duration // a pause after each 64 KiB read, for a delivery that lasts
	started atomic.Int32  // deliveries begun
	running atomic.Int32  // deliveries being read now
	overlap atomic.Bool   // two deliveries were read at once
	mu      sync.Mutex
	got     []delivered
}

type delivered struct {
	id       string
	sha256   string
	bytes    int64
	complete bool // the body ended cleanly, at its Content-Length
}

func newDeliveries(t testing.TB, pace time.Duration) *deliveries {
	d := &deliveries{pace: pace}
	d.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.started.Add(1)
		if d.running.Add(1) > 1 {
			d.overlap.Store(true)
		}
		defer d.running.Add(-1)
		h := sha256.New()
		var n int64
		var err error
		buf := make([]byte, 64<<10)
		for {
			var m int
			m, err = io.ReadFull(r.Body, buf)
			h.Write(buf[:m])
			n += int64(m)
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				err = nil
				break
			}
			if err != nil {
				break
			}
			time.Sleep(d.pace)
		}
		d.mu.Lock()
		complete := err == nil && n == r.ContentLength // a cut body ends early (ErrUnexpectedEOF)
		d.got = append(d.got, delivered{id: r.Header.Get("X-Upload-ID"), sha256: hex.EncodeToString(h.Sum(nil)), bytes: n, complete: complete})
		d.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(d.Close)
	return d
}

// all is every delivery the backend got, whole or cut short.
func (d *deliveries) all() []delivered {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]delivered(nil), d.got...)
}

// complete is the complete deliveries the backend got.
func (d *deliveries) complete() []delivered {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []delivered
	for _, g := range d.got {
		if g.complete {
			out = append(out, g)
		}
	}
	return out
}

// assertOneDelivery checks the backend got data exactly once, whole.
func (d *deliveries) assertOneDelivery(t testing.TB, data []byte) delivered {
	t.Helper()
	got := d.complete()
	if len(got) != 1 {
		t.Fatalf("the backend got %d complete deliveries (%+v), want 1", len(got), got)
	}
	if got[0].sha256 != sha256Hex(data) || got[0].bytes != int64(len(data)) {
		t.Fatalf("the backend got %d bytes with sha256 %s, want %d with %s", got[0].bytes, got[0].sha256, len(data), sha256Hex(data))
	}
	return got[0]
}

// sharedCluster starts Redis, the backend, two instances on one folder
// and, if front, the round-robin load balancer before them (its base
// URL; "" without).
func sharedCluster(t *testing.T, front bool) (a, b *instance, back *deliveries, frontBase string) {
	t.Helper()
	return sharedClusterWith(t, front, 0, "")
}

// sharedClusterWith is sharedCluster with a backend that reads at pace
// (see deliveries) and more settings in the resumable block.
func sharedClusterWith(t *testing.T, front bool, pace time.Duration, settings string) (a, b *instance, back *deliveries, frontBase string) {
	t.Helper()
	return sharedClusterOn(t, startRedis(t), front, pace, settings)
}

// sharedClusterOn is sharedClusterWith on the Redis rd.
func sharedClusterOn(t *testing.T, rd *testredis.Server, front bool, pace time.Duration, settings string) (a, b *instance, back *deliveries, frontBase string) {
	t.Helper()
	back = newDeliveries(t, pace)
	dir := t.TempDir()
	opts := sharedFolderOptions(dir)
	if settings != "" {
		opts = strings.Replace(opts, "\t\t}", settings+"\n\t\t}", 1)
	}
	a = startInstance(t, "A", rd.URL(), opts, back.URL)
	b = startInstance(t, "B", rd.URL(), opts, back.URL)
	if front {
		frontBase = startFront(t, a, b)
	}
	return a, b, back, frontBase
}

// startFront runs a Caddy process whose reverse_proxy sends requests to
// the instances round robin, adding X-Served-By (the instance's
// address) to each answer.
func startFront(t testing.TB, instances ...*instance) string {
	t.Helper()
	port := testkit.FreePort(t)
	var upstreams []string
	for _, inst := range instances {
		upstreams = append(upstreams, strings.TrimPrefix(inst.base, "http://"))
	}
	caddyfile := fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	reverse_proxy %s {
		lb_policy round_robin
		header_down +X-Served-By {http.reverse_proxy.upstream.hostport}
	}
}
`, port, strings.Join(upstreams, " "))
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	lw := &lockedWriter{w: &log}
	cmd := exec.Command(caddyBinary, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	cmd.Stdout, cmd.Stderr = lw, lw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			lw.mu.Lock()
			t.Logf("front caddy log:\n%s", log.String())
			lw.mu.Unlock()
		}
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if resp, err := http.Get(base + "/upload/status/ready-check"); err == nil {
			resp.Body.Close()
			return base
		}
		if time.Now().After(deadline) {
			t.Fatal("the front caddy did not answer within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nodeScript is a test client of caddyprogress/resumable/testdata/node.
func nodeScript(name string) string {
	return filepath.Join("..", "..", "caddyprogress", "resumable", "testdata", "node", name)
}

// runNodeClient runs a Node test client to its end (at most limit) and
// returns the JSON events it printed.
func runNodeClient(t *testing.T, limit time.Duration, script string, args ...string) []map[string]any {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed")
	}
	if _, err := os.Stat(nodeScript("node_modules")); err != nil {
		t.Skip("run npm ci --engine-strict in caddyprogress/resumable/testdata/node first")
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{nodeScript(script)}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var events []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var ev map[string]any
		if json.Unmarshal(sc.Bytes(), &ev) == nil {
			events = append(events, ev)
		}
	}
	if err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", script, err, out, stderr.String())
	}
	return events
}

// tus-js-client uploads 1 MiB in PATCHes of 128 KiB through the
// round-robin front: its requests alternate between the two instances,
// every one is answered without a retry, and the backend gets the file
// once, byte-identical; onSuccess sees the backend's answer.
func TestTusJSClientAlternatesInstancesThroughRoundRobin(t *testing.T) {
	a, b, back, front := sharedCluster(t, true)
	data := payload(1 << 20)
	file := filepath.Join(t.TempDir(), "payload.bin")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	opts := `{"chunkSize": 131072, "traceResponses": true, "retryDelays": []}`
	events := runNodeClient(t, 2*time.Minute, "tus-upload.mjs", front+"/files/", file, opts)
	served := map[string]int{}
	patches := 0
	var last map[string]any
	for _, ev := range events {
		switch ev["event"] {
		case "response":
			served[ev["servedBy"].(string)]++
			if ev["method"] == "PATCH" {
				patches++
			}
		case "success", "error":
			last = ev
		}
	}
	if last == nil || last["event"] != "success" || last["status"] != float64(http.StatusCreated) {
		t.Fatalf("tus-js-client ended with %v, want success with the backend's 201 (events %v)", last, events)
	}
	if patches < 8 {
		t.Fatalf("%d PATCHes, want 8 or more (chunkSize 128 KiB of 1 MiB)", patches)
	}
	for _, inst := range []*instance{a, b} {
		if served[strings.TrimPrefix(inst.base, "http://")] == 0 {
			t.Fatalf("instance %s served no request (served: %v)", inst.name, served)
		}
	}
	back.assertOneDelivery(t, data)
}

// Uppy uploads 1 MiB in PATCHes of 100 KB through the round-robin
// front: the backend gets it once, byte-identical.
func TestUppyAlternatesInstancesThroughRoundRobin(t *testing.T) {
	_, _, back, front := sharedCluster(t, true)
	data := payload(1 << 20)
	file := filepath.Join(t.TempDir(), "photo.bin")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	events := runNodeClient(t, 2*time.Minute, "uppy-chunked.mjs", front+"/files/", "100000", file)
	if len(events) != 1 || events[0]["event"] != "done" {
		t.Fatalf("uppy printed %v, want one done event", events)
	}
	if ok, _ := events[0]["successful"].([]any); len(ok) != 1 {
		t.Fatalf("uppy: %v, want one successful file", events[0])
	}
	back.assertOneDelivery(t, data)
}

// tusRequest sends a tus request for lbHost straight to inst.
func tusRequest(t testing.TB, inst *instance, method, path string, body io.Reader, size int64, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, inst.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = lbHost
	req.ContentLength = size
	req.Header.Set("Tus-Resumable", "1.0.0")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := inst.client.Do(req)
	if err != nil {
		return nil, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// create creates an upload of size bytes through inst and returns its path.
func createOn(t testing.TB, inst *instance, size int) string {
	t.Helper()
	resp, body := tusRequest(t, inst, http.MethodPost, "/files/", nil, 0, http.Header{"Upload-Length": {strconv.Itoa(size)}})
	if resp == nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("creation on %s: %v %s", inst.name, resp, body)
	}
	return "/files/" + resp.Header.Get("X-Upload-ID")
}

// patchOn sends data at offset; it returns the answer (nil if the
// connection broke).
func patchOn(t testing.TB, inst *instance, path string, offset int64, body io.Reader, size int64) (*http.Response, []byte) {
	t.Helper()
	return tusRequest(t, inst, http.MethodPatch, path, body, size, http.Header{
		"Upload-Offset": {strconv.FormatInt(offset, 10)},
		"Content-Type":  {"application/offset+octet-stream"},
	})
}

// headOn returns the upload's stored offset as inst answers HEAD.
func headOn(t testing.TB, inst *instance, path string) (int, int64) {
	t.Helper()
	resp, _ := tusRequest(t, inst, http.MethodHead, path, nil, 0, nil)
	if resp == nil {
		t.Fatalf("HEAD on %s: no answer", inst.name)
	}
	offset, _ := strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64)
	return resp.StatusCode, offset
}

// finishOn sends the rest of data from the stored offset through inst
// and checks the answer is the backend's.
func finishOn(t testing.TB, inst *instance, path string, data []byte) {
	t.Helper()
	code, offset := headOn(t, inst, path)
	if code != http.StatusOK {
		t.Fatalf("HEAD on %s: %d", inst.name, code)
	}
	resp, body := patchOn(t, inst, path, offset, bytes.NewReader(data[offset:]), int64(len(data))-offset)
	if resp == nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("the last PATCH on %s from offset %d: %v %s, want the backend's 201", inst.name, offset, resp, body)
	}
}

// Two clients PATCH one upload at once, each through another instance:
// the lock (in Redis) lets one write at a time (the holder, asked to let
// go, is answered 423 Locked), a client is never told
// of success for bytes that were not stored, and the upload, finished
// from the stored offset, reaches the backend once, byte-identical.
func TestConcurrentPatchesThroughTwoInstances(t *testing.T) {
	a, b, back, _ := sharedCluster(t, false)
	data := payload(4 << 20)
	path := createOn(t, a, len(data))

	first := paced(data, 64<<10, 20*time.Millisecond) // ~1.3s for the whole body
	type answer struct {
		inst   string
		code   int
		offset int64
	}
	answers := make(chan answer, 2)
	send := func(inst *instance, body io.Reader) {
		resp, _ := patchOn(t, inst, path, 0, body, int64(len(data)))
		if resp == nil {
			answers <- answer{inst: inst.name}
			return
		}
		off, _ := strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64)
		answers <- answer{inst: inst.name, code: resp.StatusCode, offset: off}
	}
	go send(a, first)
	for first.sent.Load() < 256<<10 { // A holds the lock and has bytes stored
		time.Sleep(5 * time.Millisecond)
	}
	go send(b, paced(data, 64<<10, 20*time.Millisecond))
	var got []answer
	for range 2 {
		got = append(got, <-answers)
	}
	_, stored := headOn(t, b, path)
	succeeded := 0
	for _, ans := range got {
		if ans.code >= 200 && ans.code < 300 {
			succeeded++
			if ans.offset > stored && stored != int64(len(data)) {
				t.Fatalf("%s answered %d with offset %d, but %d bytes are stored", ans.inst, ans.code, ans.offset, stored)
			}
		}
	}
	if succeeded > 1 {
		t.Fatalf("answers %+v: both succeeded", got)
	}
	// A held the lock when B asked for it: A's PATCH was stopped, and
	// answered as tus answers a locked upload (its client retries)
	for _, ans := range got {
		if ans.inst == a.name && ans.code != http.StatusLocked {
			t.Fatalf("answers %+v: A's PATCH, interrupted by B's, answered %d, want 423", got, ans.code)
		}
	}
	t.Logf("answers %+v, stored %d", got, stored)
	if stored < int64(len(data)) {
		finishOn(t, a, path, data)
	}
	back.assertOneDelivery(t, data)
}

// The instance holding an upload's lock is killed mid-PATCH: the
// client's retry on the other instance takes the lock once its lease
// (5s) ends, goes on from the stored offset, and the backend gets the
// upload once, byte-identical.
func TestHolderKilledMidPatchRetryGoesOnElsewhere(t *testing.T) {
	a, b, back, _ := sharedCluster(t, false)
	data := payload(4 << 20)
	path := createOn(t, a, len(data))

	body := paced(data, 64<<10, 20*time.Millisecond)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = patchOn(t, a, path, 0, body, int64(len(data)))
	}()
	for body.sent.Load() < 1<<20 {
		time.Sleep(5 * time.Millisecond)
	}
	a.kill()
	<-done
	killed := time.Now()
	code, offset := headOn(t, b, path)
	took := time.Since(killed)
	if code != http.StatusOK || offset <= 0 || offset > int64(len(data)) {
		t.Fatalf("HEAD on B after A was killed: %d, offset %d", code, offset)
	}
	t.Logf("B answered HEAD with offset %d after %v (lock lease 5s)", offset, took)
	if took > 15*time.Second { // tusd gives up on a lock after 20s
		t.Fatalf("HEAD on B took %v: the dead holder's lock outlived its lease", took)
	}
	finishOn(t, b, path, data)
	back.assertOneDelivery(t, data)
}

// frequentSweeps makes each instance sweep the folder every 100ms.
const frequentSweeps = "\t\t\treserve_for 1s"

// A delivery running on A is not started again by B, whose sweeper
// finds the upload "delivering" in the shared folder: the claim in
// Redis is A's while A delivers. (B gets requests meanwhile, which
// give its sweeper a way to the backend.)
func TestRunningDeliveryIsNotStartedTwice(t *testing.T) {
	a, b, back, _ := sharedClusterWith(t, false, 50*time.Millisecond, frequentSweeps)
	data := payload(2 << 20) // 32 reads of the slow backend: 1.6s
	path := createOn(t, a, len(data))
	done := make(chan *http.Response, 1)
	go func() {
		resp, _ := patchOn(t, a, path, 0, bytes.NewReader(data), int64(len(data)))
		done <- resp
	}()
	for {
		select {
		case resp := <-done:
			if resp == nil || resp.StatusCode != http.StatusCreated {
				t.Fatalf("the last PATCH on A: %v, want the backend's 201", resp)
			}
			// a second delivery would have begun during A's (1.6s, B
			// sweeping every 100ms), and not yet ended
			if n := back.started.Load(); n != 1 {
				t.Fatalf("the backend saw %d deliveries begin, want 1", n)
			}
			back.assertOneDelivery(t, data)
			return
		case <-time.After(50 * time.Millisecond):
			headOn(t, b, path) // 423 while A delivers
		}
	}
}

// The instance running a delivery is killed mid-delivery: another
// instance delivers the upload once the claim's lease (5s) ends. The
// backend sees the interrupted delivery and one complete one.
func TestDeliveryOfAKilledInstanceIsTakenOver(t *testing.T) {
	// 24 MiB, more than the sockets between A and the backend buffer, so
	// that A's death cuts the delivery short; 384 reads of the slow
	// backend: 2s
	a, b, back, _ := sharedClusterWith(t, false, 5*time.Millisecond, frequentSweeps)
	data := payload(24 << 20)
	path := createOn(t, a, len(data))
	go func() { _, _ = patchOn(t, a, path, 0, bytes.NewReader(data), int64(len(data))) }()
	for back.started.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	a.kill()
	killed := time.Now()
	deadline := killed.Add(60 * time.Second)
	for {
		code, offset := headOn(t, b, path) // 423 until delivered, then 200 at the end
		if code == http.StatusOK && offset == int64(len(data)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B did not deliver within 60s of A's death: HEAD %d offset %d", code, offset)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("B delivered %v after A was killed (delivery lease 5s)", time.Since(killed))
	back.assertOneDelivery(t, data)
	if got := back.all(); len(got) != 2 {
		t.Fatalf("the backend got %d deliveries (%+v), want the interrupted one and the complete one", len(got), got)
	}
}

// An upload created (and tracked) on A whose last PATCH goes to B is
// delivered by B; A's status of it then ends complete too, not paused.
func TestStatusEndsOnTheTrackingInstanceAfterDeliveryElsewhere(t *testing.T) {
	a, b, back, _ := sharedClusterWith(t, false, 0, frequentSweeps)
	data := payload(256 << 10)
	path := createOn(t, a, len(data))
	finishOn(t, b, path, data)
	back.assertOneDelivery(t, data)
	id := strings.TrimPrefix(path, "/files/")
	a.waitFor(t, id, 30*time.Second, "complete on A", func(code int, s status) bool {
		return code == http.StatusOK && s.Status == "complete" && s.Received == int64(len(data))
	})
}

// An instance that could not track an upload when its last PATCH came
// (the ID still claimed by the killed instance that tracked it) tracks
// it when its delivery ends, once that claim's lease is over: the
// final record counts every byte, though the upload's bytes are gone
// from the folder by then (before: complete with 0 bytes received).
func TestFinalRecordCountsEveryByteWhenTrackedAtTheEnd(t *testing.T) {
	t.Parallel() // mostly waiting (see the package doc)
	// the backend reads 64 KiB every 250 ms: the delivery of 2 MiB
	// outlasts the killed instance's tracker lease (5 s)
	a, b, back, _ := sharedClusterWith(t, false, 250*time.Millisecond, "")
	data := payload(2 << 20)
	half := int64(len(data) / 2)
	path := createOn(t, a, len(data))
	id := strings.TrimPrefix(path, "/files/")
	if resp, body := patchOn(t, a, path, 0, bytes.NewReader(data[:half]), half); resp == nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("first PATCH on A: %v %s", resp, body)
	}
	a.kill()
	resp, body := patchOn(t, b, path, half, bytes.NewReader(data[half:]), int64(len(data))-half)
	if resp == nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("last PATCH on B: %v %s, want the backend's 201", resp, body)
	}
	back.assertOneDelivery(t, data)
	code, s := b.status(t, id)
	if code != http.StatusOK || s.Status != "complete" || s.Received != int64(len(data)) {
		t.Fatalf("on B after its delivery: %d %+v, want complete with %d bytes", code, s, len(data))
	}
}

// stalledReader sends head, waits for pause, then sends the rest.
type stalledReader struct {
	data  []byte
	head  int
	pause time.Duration
	pos   int
}

func (r *stalledReader) Read(p []byte) (int, error) {
	if r.pos >= len(r.data) {
		return 0, io.EOF
	}
	if r.pos == r.head {
		time.Sleep(r.pause)
	}
	end := len(r.data)
	if r.pos < r.head {
		end = r.head
	}
	n := copy(p, r.data[r.pos:end])
	r.pos += n
	return n, nil
}

// A PATCH on A that stalls longer than expire keeps its upload: B's
// sweeper, which sees no new byte in the shared folder, leaves alone an
// upload whose lock a request holds.
func TestExpiryLeavesAnUploadLockedElsewhere(t *testing.T) {
	a, _, back, _ := sharedClusterWith(t, false, 0, frequentSweeps+"\n\t\t\texpire 1s") // B sweeps too
	data := payload(256 << 10)
	path := createOn(t, a, len(data))
	resp, body := patchOn(t, a, path, 0, &stalledReader{data: data, head: 64 << 10, pause: 3 * time.Second}, int64(len(data)))
	if resp == nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("the stalled PATCH on A: %v %s, want the backend's 201", resp, body)
	}
	back.assertOneDelivery(t, data)
}

// With Redis down, no instance can take an upload's lock: HEAD and
// PATCH are answered 503 with Retry-After and a JSON error (tus clients
// retry), no byte
// is stored and nothing is delivered; once Redis is back, the upload
// goes on from its stored offset and is delivered once.
func TestRedisDownStopsPatchesAndNothingIsDeliveredTwice(t *testing.T) {
	rd := startRedis(t)
	a, b, back, _ := sharedClusterOn(t, rd, false, 0, "")
	data := payload(512 << 10)
	path := createOn(t, a, len(data))
	half := int64(len(data) / 2)
	if resp, body := patchOn(t, a, path, 0, bytes.NewReader(data[:half]), half); resp == nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("first half on A: %v %s", resp, body)
	}
	rd.Kill()
	resp, body := patchOn(t, b, path, half, bytes.NewReader(data[half:]), int64(len(data))-half)
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		!bytes.Contains(body, []byte(`"error":"the upload's lock cannot be taken now`)) || bytes.Contains(body, []byte("redis")) {
		t.Fatalf("second half on B with Redis down: %v %s, want 503 with Retry-After and a JSON error without Redis's", resp, body)
	}
	if code, _ := headOn(t, a, path); code != http.StatusServiceUnavailable {
		t.Fatalf("HEAD on A with Redis down: %d, want 503", code)
	}
	if n := back.started.Load(); n != 0 {
		t.Fatalf("%d deliveries began with Redis down, want 0", n)
	}
	rd.Start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, offset := headOn(t, b, path)
		if code == http.StatusOK {
			if offset != half {
				t.Fatalf("offset after Redis came back: %d, want %d", offset, half)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("HEAD on B still %d 30s after Redis came back", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	finishOn(t, b, path, data)
	back.assertOneDelivery(t, data)
}

// An upload created (and tracked) on A whose bytes arrive through B
// shows them in its progress: A's record counts what is stored in the
// shared folder, whichever instance stored it.
func TestProgressCountsBytesStoredThroughAnotherInstance(t *testing.T) {
	a, b, _, _ := sharedClusterWith(t, false, 0, frequentSweeps)
	data := payload(256 << 10)
	path := createOn(t, a, len(data))
	half := int64(len(data) / 2)
	if resp, body := patchOn(t, b, path, 0, bytes.NewReader(data[:half]), half); resp == nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("first half on B: %v %s", resp, body)
	}
	id := strings.TrimPrefix(path, "/files/")
	for _, inst := range []*instance{a, b} {
		inst.waitFor(t, id, 30*time.Second, "the first half counted", func(code int, s status) bool {
			return code == http.StatusOK && s.Status == "paused" && s.Received == half
		})
	}
}

// While B delivers an upload that A tracks, A's status (and so every
// instance's) shows it delivering, not paused.
func TestStatusShowsDeliveringWhileAnotherInstanceDelivers(t *testing.T) {
	a, b, back, _ := sharedClusterWith(t, false, 50*time.Millisecond, frequentSweeps)
	data := payload(4 << 20) // 64 reads of the slow backend: 3.2s
	path := createOn(t, a, len(data))
	id := strings.TrimPrefix(path, "/files/")
	done := make(chan *http.Response, 1)
	go func() {
		resp, _ := patchOn(t, b, path, 0, bytes.NewReader(data), int64(len(data)))
		done <- resp
	}()
	for back.started.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	var last status
	for {
		select {
		case resp := <-done:
			t.Fatalf("B's delivery ended (%v) before A showed it delivering; last %+v", resp, last)
		case <-time.After(20 * time.Millisecond):
		}
		code, s := a.status(t, id)
		last = s
		if code == http.StatusOK && s.Status == "delivering" {
			if s.Received != int64(len(data)) {
				t.Fatalf("A shows it delivering with %d bytes received, want %d", s.Received, len(data))
			}
			break
		}
	}
	if resp := <-done; resp == nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("the last PATCH on B: %v, want the backend's 201", resp)
	}
	a.waitFor(t, id, 30*time.Second, "complete on A", func(code int, s status) bool {
		return code == http.StatusOK && s.Status == "complete"
	})
	back.assertOneDelivery(t, data)
}
