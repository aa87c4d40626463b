package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis down with resumable uploads on a shared folder (docs/resumable.md,
// "Redis down"): what can go on locally does, and nothing is delivered
// twice.

// gatedReader sends head bytes of data, then waits for open to be
// closed before it sends the rest.
type gatedReader struct {
	data []byte
	head int
	open chan struct{}
	sent atomic.Int64
}

func gated(data []byte, head int) *gatedReader {
	return &gatedReader{data: data, head: head, open: make(chan struct{})}
}

func (g *gatedReader) Read(p []byte) (int, error) {
	off := int(g.sent.Load())
	if off >= len(g.data) {
		return 0, io.EOF
	}
	if off == g.head {
		<-g.open
	}
	end := len(g.data)
	if off < g.head {
		end = g.head
	}
	n := copy(p, g.data[off:end])
	g.sent.Add(int64(n))
	return n, nil
}

// outlastLease is how long a test keeps Redis down so that a lock would
// have been given up by then (its lease is 5s, renewed every 1.7s).
const outlastLease = 7 * time.Second

// awaitLockKey waits until Redis holds exactly one resumable lock, and
// returns its key.
func awaitLockKey(t *testing.T, rc *redis.Client) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		keys, err := rc.Keys(context.Background(), "upload_progress:resumable:*:lock").Result()
		if err == nil && len(keys) == 1 {
			return keys[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis holds locks %v (%v) after 20s, want the PATCH's one", keys, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// headOnceRedisIsBack is headOn, asked again while inst answers 503
// (its connections to Redis are made again).
func headOnceRedisIsBack(t *testing.T, inst *instance, path string) (int, int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, offset := headOn(t, inst, path)
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return code, offset
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startGatedPatch sends a PATCH of data through inst whose body stops
// after head bytes until the gate opens; the answer comes on the
// channel. It returns once head bytes were read.
func startGatedPatch(t *testing.T, inst *instance, path string, data []byte, head int) (*gatedReader, <-chan *http.Response) {
	t.Helper()
	body := gated(data, head)
	done := make(chan *http.Response, 1)
	go func() {
		resp, _ := patchOn(t, inst, path, 0, body, int64(len(data)))
		done <- resp
	}()
	for body.sent.Load() < int64(head) {
		time.Sleep(5 * time.Millisecond)
	}
	return body, done
}

// A PATCH that holds its lock when Redis goes down goes on, for longer
// than the lock's lease: its renewals fail, but no other instance can
// take the lock meanwhile. When Redis is back (empty), the holder sets
// its lock there again; the PATCH ends, the delivery is claimed in
// Redis, and the backend gets the upload once, byte-identical. Another
// instance answers 503 meanwhile for the upload it does not hold.
func TestPatchInProgressGoesOnWhileRedisIsDown(t *testing.T) {
	t.Parallel() // mostly waiting (see the package doc)
	rd := startRedis(t)
	a, b, back, _ := sharedClusterOn(t, rd, false, 0, "")
	rc := rd.Client(t)
	data := payload(2 << 20)
	path := createOn(t, a, len(data))
	body, done := startGatedPatch(t, a, path, data, 512<<10)
	awaitLockKey(t, rc)
	rd.Kill()
	if code, _ := headOn(t, b, path); code != http.StatusServiceUnavailable {
		t.Fatalf("HEAD on B with Redis down: %d, want 503", code)
	}
	select {
	case resp := <-done:
		t.Fatalf("the PATCH on A ended with Redis down: %v, want it to go on", resp)
	case <-time.After(outlastLease):
	}
	rd.Start()
	awaitLockKey(t, rc) // set again by its holder
	select {
	case resp := <-done:
		t.Fatalf("the PATCH on A ended when Redis came back: %v, want it to go on", resp)
	default:
	}
	close(body.open)
	if resp := <-done; resp == nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("the PATCH on A: %v, want the backend's 201", resp)
	}
	back.assertOneDelivery(t, data)
}

// When Redis comes back and the lock of a PATCH that went on meanwhile
// is another's there, the holder lets go at once: the PATCH is answered
// 423 (locked: tus clients retry) with the bytes it stored kept, and the upload goes
// on from there, delivered once.
func TestPatchLetsGoWhenItsLockIsAnothersOnceRedisIsBack(t *testing.T) {
	t.Parallel() // mostly waiting (see the package doc)
	rd := startRedis(t)
	a, b, back, _ := sharedClusterOn(t, rd, false, 0, "")
	rc := rd.Client(t)
	data := payload(2 << 20)
	path := createOn(t, a, len(data))
	_, done := startGatedPatch(t, a, path, data, 512<<10)
	key := awaitLockKey(t, rc)
	rd.Kill()
	select {
	case resp := <-done:
		t.Fatalf("the PATCH on A ended with Redis down: %v, want it to go on", resp)
	case <-time.After(outlastLease):
	}
	rd.Start()
	if err := rc.Set(context.Background(), key, "another instance's token", 0).Err(); err != nil {
		t.Fatal(err)
	}
	resp := <-done
	if resp == nil || resp.StatusCode != http.StatusLocked || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("the PATCH on A once its lock was another's: %v, want 423 (locked) with Retry-After", resp)
	}
	if err := rc.Del(context.Background(), key).Err(); err != nil { // the other holder lets go
		t.Fatal(err)
	}
	if code, offset := headOnceRedisIsBack(t, b, path); code != http.StatusOK || offset != 512<<10 {
		t.Fatalf("HEAD on B: %d offset %d, want 200 at %d", code, offset, 512<<10)
	}
	finishOn(t, b, path, data)
	back.assertOneDelivery(t, data)
}

// With Redis down, a creation whose body is a first part goes on under
// a lock of its instance alone (nobody else knows its ID): 201 with the
// part stored. A creation whose body would complete the upload is
// refused with 503 before its bytes are stored (it would need a
// delivery claim, and its client would never get its URL), and so is a
// PATCH of the upload, which needs its lock in Redis. Once Redis is
// back, the upload goes on through the other instance, delivered once.
func TestCreationWithAPartGoesOnWhileRedisIsDown(t *testing.T) {
	t.Parallel() // mostly waiting (see the package doc)
	rd := startRedis(t)
	a, b, back, _ := sharedClusterOn(t, rd, false, 0, "")
	data := payload(512 << 10)
	part := 128 << 10
	rd.Kill()
	resp, body := tusRequest(t, b, http.MethodPost, "/files/", bytes.NewReader(data[:part]), int64(part), http.Header{
		"Upload-Length": {strconv.Itoa(len(data))},
		"Content-Type":  {"application/offset+octet-stream"},
	})
	if resp == nil || resp.StatusCode != http.StatusCreated || resp.Header.Get("Upload-Offset") != strconv.Itoa(part) {
		t.Fatalf("creation with a part on B with Redis down: %v %s, want 201 at offset %d", resp, body, part)
	}
	path := "/files/" + resp.Header.Get("X-Upload-ID")

	whole := payload(64 << 10)
	resp, body = tusRequest(t, b, http.MethodPost, "/files/", bytes.NewReader(whole), int64(len(whole)), http.Header{
		"Upload-Length": {strconv.Itoa(len(whole))},
		"Content-Type":  {"application/offset+octet-stream"},
	})
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("creation with the whole body on B with Redis down: %v %s, want 503 with Retry-After", resp, body)
	}

	resp, body = patchOn(t, b, path, int64(part), bytes.NewReader(data[part:]), int64(len(data)-part))
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("PATCH on B with Redis down: %v %s, want 503 with Retry-After", resp, body)
	}
	if n := back.started.Load(); n != 0 {
		t.Fatalf("%d deliveries began with Redis down, want 0", n)
	}
	rd.Start()
	if code, offset := headOnceRedisIsBack(t, a, path); code != http.StatusOK || offset != int64(part) {
		t.Fatalf("HEAD on A once Redis is back: %d offset %d, want 200 at %d", code, offset, part)
	}
	finishOn(t, a, path, data)
	back.assertOneDelivery(t, data)
}

// The last byte of a PATCH that went on while Redis is down is stored,
// but its delivery cannot be claimed: the client gets 503 with
// Retry-After, and HEAD, on any instance, 423 with Retry-After (the
// upload is recorded delivering). Once Redis is back, an instance's
// sweeper claims the delivery and delivers it once; HEAD then says the
// upload is complete (offset = length).
func TestLastByteWhileRedisIsDownIsDeliveredOnceItIsBack(t *testing.T) {
	rd := startRedis(t)
	a, b, back, _ := sharedClusterOn(t, rd, false, 0, frequentSweeps)
	rc := rd.Client(t)
	data := payload(1 << 20)
	path := createOn(t, a, len(data))
	body, done := startGatedPatch(t, a, path, data, 256<<10)
	awaitLockKey(t, rc)
	rd.Kill()
	close(body.open)
	resp := <-done
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("the last PATCH on A with Redis down: %v, want 503 with Retry-After", resp)
	}
	for _, inst := range []*instance{a, b} {
		if resp, _ := tusRequest(t, inst, http.MethodHead, path, nil, 0, nil); resp == nil ||
			resp.StatusCode != http.StatusLocked || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("HEAD on %s with Redis down: %v, want 423 with Retry-After", inst.name, resp)
		}
	}
	if n := back.started.Load(); n != 0 {
		t.Fatalf("%d deliveries began with Redis down, want 0", n)
	}
	rd.Start()
	// HEADs alternate between the instances, as through a load balancer:
	// the instance whose sweeper claims the delivery runs it through the
	// route of its next request on the site
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		inst := []*instance{a, b}[i%2]
		code, offset := headOn(t, inst, path) // 423 until it is delivered
		if code == http.StatusOK && offset == int64(len(data)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("HEAD on %s 30s after Redis came back: %d offset %d, want 200 at %d", inst.name, code, offset, len(data))
		}
		time.Sleep(100 * time.Millisecond)
	}
	back.assertOneDelivery(t, data)
}

// Redis restarts empty while A delivers an upload: A's claim is gone
// from Redis, and B's sweeper finds the upload delivering. For a lease
// after such a restart, Redis grants no lock or claim, so A finds its
// claim gone and stops before B may claim the delivery: the backend
// never reads two deliveries of the upload at once, and gets it whole
// once.
func TestDeliveryIsNotRunTwiceAtOnceAfterRedisRestartsEmpty(t *testing.T) {
	rd := startRedis(t)
	a, b, back, _ := sharedClusterOn(t, rd, false, 5*time.Millisecond, frequentSweeps)
	data := payload(24 << 20) // 384 reads of the slow backend: 2s
	path := createOn(t, a, len(data))
	go func() { _, _ = patchOn(t, a, path, 0, bytes.NewReader(data), int64(len(data))) }()
	for back.started.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	rd.Kill()
	rd.Start()
	// HEADs alternate between the instances, as through a load balancer,
	// and bring each its route for a delivery in the background
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; ; i++ {
		inst := []*instance{a, b}[i%2]
		code, offset := headOn(t, inst, path)
		if code == http.StatusOK && offset == int64(len(data)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("HEAD on %s 60s after Redis restarted: %d offset %d, want 200 at %d", inst.name, code, offset, len(data))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if back.overlap.Load() {
		t.Fatalf("the backend read two deliveries of the upload at once: %+v", back.all())
	}
	back.assertOneDelivery(t, data)
}

// tus-js-client uploads 32 MiB in PATCHes of 1 MiB through the
// round-robin front while Redis is killed mid-upload and restarted
// empty 3s later: with its retryDelays it rides through the 503s (and
// a 400 if a PATCH was let go), ends with the backend's 201, and the
// backend gets the file once, byte-identical.
func TestTusJSClientRidesThroughARedisRestart(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed")
	}
	if _, err := os.Stat(nodeScript("node_modules")); err != nil {
		t.Skip("run npm ci --engine-strict in caddyprogress/resumable/testdata/node first")
	}
	rd := startRedis(t)
	_, _, back, front := sharedClusterOn(t, rd, true, 0, "")
	rc := rd.Client(t)
	data := payload(32 << 20)
	file := filepath.Join(t.TempDir(), "payload.bin")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	opts := `{"chunkSize": 1048576, "retryDelays": [500, 1000, 1000, 1000, 1000, 1000, 2000, 2000, 2000, 2000, 3000, 3000, 3000]}`
	cmd := exec.CommandContext(ctx, "node", nodeScript("tus-upload.mjs"), front+"/files/", file, opts)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- cmd.Wait() }()
	// Redis goes while a PATCH holds its lock
	for {
		if keys, _ := rc.Keys(ctx, "upload_progress:resumable:*:lock").Result(); len(keys) > 0 {
			break
		}
		select {
		case err := <-ended:
			t.Fatalf("the client ended (%v) before Redis was killed: %s %s", err, stdout.String(), stderr.String())
		case <-time.After(2 * time.Millisecond):
		}
	}
	rd.Kill()
	time.Sleep(3 * time.Second)
	rd.Start()
	if err := <-ended; err != nil {
		t.Fatalf("tus-upload.mjs: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	var last map[string]any
	for _, line := range bytes.Split(stdout.Bytes(), []byte("\n")) {
		var ev map[string]any
		if json.Unmarshal(line, &ev) == nil && (ev["event"] == "success" || ev["event"] == "error") {
			last = ev
		}
	}
	if last == nil || last["event"] != "success" || last["status"] != float64(http.StatusCreated) {
		t.Fatalf("tus-js-client ended with %v, want success with the backend's 201\n%s", last, stdout.String())
	}
	back.assertOneDelivery(t, data)
}
