package clustertest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/tests3"
)

// Resumable uploads in an S3 bucket behind a load balancer
// (docs/resumable.md, "In an S3 bucket"): two Caddy instances on one
// bucket of a real S3 server on loopback (Versity's S3 gateway, package
// tests3) and the tracker's Redis, the round-robin front before them.

// s3Bucket is the bucket of these tests.
const s3Bucket = "uploads"

// s3Options is the resumable block of each instance: the bucket of gw,
// swept every 100 ms (a tenth of reserve_for), so that a state reached
// through one instance shows on the other soon.
func s3Options(gw *tests3.Server) string {
	return fmt.Sprintf("\t\tresumable /files/ {\n\t\t\ts3 s3://%s/cluster {\n\t\t\t\tendpoint %s\n\t\t\t\tpath_style\n\t\t\t}\n\t\t\tdeliver_to /upload\n\t\t\treserve_for 1s\n\t\t}",
		s3Bucket, gw.Endpoint())
}

// s3Cluster starts the gateway, Redis, the backend, two instances on
// the bucket (the gateway's credentials in their environment) and the
// round-robin front.
func s3Cluster(t *testing.T) (gw *tests3.Server, a, b, front *instance, back *deliveries) {
	t.Helper()
	return s3ClusterWith(t, 0)
}

// s3ClusterWith is s3Cluster with a backend that reads at pace (see
// deliveries).
func s3ClusterWith(t *testing.T, pace time.Duration) (gw *tests3.Server, a, b, front *instance, back *deliveries) {
	t.Helper()
	gw = tests3.Start(t, s3Bucket)
	gw.SetEnv(t) // the instances inherit it
	rd := startRedis(t)
	back = newDeliveries(t, pace)
	a = startInstance(t, "A", rd.URL(), s3Options(gw), back.URL)
	b = startInstance(t, "B", rd.URL(), s3Options(gw), back.URL)
	front = &instance{t: t, name: "front", base: startFront(t, a, b), client: &http.Client{Transport: &http.Transport{DisableCompression: true}}}
	return gw, a, b, front, back
}

// s3KeysOf lists the bucket's objects of upload id.
func s3KeysOf(gw *tests3.Server, id string) []string {
	var keys []string
	for _, k := range gw.Keys(s3Bucket) {
		if strings.Contains(k, id) {
			keys = append(keys, k)
		}
	}
	return keys
}

// 17 MiB in PATCHes of 6 MiB through the round-robin front: the
// PATCHes alternate between the instances, each one's bytes join the
// one multipart upload in the bucket, the backend gets the file once,
// byte-identical, and both instances then read the upload complete.
func TestS3UploadAlternatesInstancesThroughRoundRobin(t *testing.T) {
	gw, a, b, front, back := s3Cluster(t)
	data := payload(17 << 20)
	path := createOn(t, front, len(data))
	id := strings.TrimPrefix(path, "/files/")
	served := map[string]int{}
	const chunk = 6 << 20
	for offset := 0; offset < len(data); offset += chunk {
		end := min(offset+chunk, len(data))
		resp, body := patchOn(t, front, path, int64(offset), bytes.NewReader(data[offset:end]), int64(end-offset))
		want := http.StatusNoContent
		if end == len(data) {
			want = http.StatusCreated // the backend's answer
		}
		if resp == nil || resp.StatusCode != want {
			t.Fatalf("PATCH at %d through the front: %v %s, want %d", offset, resp, body, want)
		}
		served[resp.Header.Get("X-Served-By")]++
	}
	for _, inst := range []*instance{a, b} {
		if served[strings.TrimPrefix(inst.base, "http://")] == 0 {
			t.Fatalf("instance %s served no PATCH (served: %v)", inst.name, served)
		}
	}
	back.assertOneDelivery(t, data)
	for _, inst := range []*instance{a, b} {
		inst.waitFor(t, id, 30*time.Second, "complete", func(code int, s status) bool {
			return s.Status == "complete" && s.Received == int64(len(data))
		})
	}
	if keys := s3KeysOf(gw, id); len(keys) != 1 || !strings.HasSuffix(keys[0], id+".delivery") {
		t.Fatalf("objects of the delivered upload: %v, want only its record", keys)
	}
	if left := gw.MultipartUploads(s3Bucket); len(left) != 0 {
		t.Fatalf("multipart uploads left: %v", left)
	}
}

// tus-js-client uploads 17 MiB in chunks of 6 MiB through the
// round-robin front onto the bucket: its requests alternate between the
// instances, none is retried, onSuccess sees the backend's answer, and
// the backend gets the file once, byte-identical.
func TestS3TusJSClientThroughRoundRobin(t *testing.T) {
	_, a, b, front, back := s3Cluster(t)
	data := payload(17 << 20)
	file := filepath.Join(t.TempDir(), "payload.bin")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	opts := `{"chunkSize": 6291456, "traceResponses": true, "retryDelays": []}`
	events := runNodeClient(t, 2*time.Minute, "tus-upload.mjs", front.base+"/files/", file, opts)
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
	if patches != 3 {
		t.Fatalf("%d PATCHes, want 3 (chunkSize 6 MiB of 17 MiB)", patches)
	}
	for _, inst := range []*instance{a, b} {
		if served[strings.TrimPrefix(inst.base, "http://")] == 0 {
			t.Fatalf("instance %s served no request (served: %v)", inst.name, served)
		}
	}
	back.assertOneDelivery(t, data)
}

// An upload created on A and written through B is terminated through
// A: B answers 404 for it from then on, its progress ends aborted on
// both, and nothing of it is left in the bucket.
func TestS3UploadDeletedOnOneInstanceIsGoneOnTheOther(t *testing.T) {
	gw, a, b, _, back := s3Cluster(t)
	path := createOn(t, a, 8<<20)
	id := strings.TrimPrefix(path, "/files/")
	if resp, body := patchOn(t, b, path, 0, bytes.NewReader(payload(5<<20+1)), 5<<20+1); resp == nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH on B: %v %s", resp, body)
	}
	if code, offset := headOn(t, a, path); code != http.StatusOK || offset != 5<<20+1 {
		t.Fatalf("HEAD on A: %d offset %d, want 200 at %d", code, offset, 5<<20+1)
	}
	if resp, body := tusRequest(t, a, http.MethodDelete, path, nil, 0, nil); resp == nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE on A: %v %s", resp, body)
	}
	if code, _ := headOn(t, b, path); code != http.StatusNotFound {
		t.Fatalf("HEAD on B after the DELETE on A: %d, want 404", code)
	}
	for _, inst := range []*instance{a, b} {
		inst.waitFor(t, id, 30*time.Second, "aborted", func(code int, s status) bool { return s.Status == "aborted" })
	}
	if keys := s3KeysOf(gw, id); len(keys) != 0 {
		t.Fatalf("objects left after the DELETE: %v", keys)
	}
	if left := gw.MultipartUploads(s3Bucket); len(left) != 0 {
		t.Fatalf("multipart uploads left after the DELETE: %v", left)
	}
	if got := back.all(); len(got) != 0 {
		t.Fatalf("the backend got %d deliveries of a terminated upload", len(got))
	}
}

// The instance holding an upload's lock is killed (SIGKILL) mid-PATCH:
// the retry on the other instance gets the lock once its lease ends,
// HEAD there gives the offset stored in the bucket (the parts of the
// PATCHes that ended; the killed one's bytes were still in A's
// temporary part), and the upload finished from there reaches the
// backend once, byte-identical.
func TestS3HolderKilledMidPatchRetryGoesOnElsewhere(t *testing.T) {
	_, a, b, _, back := s3Cluster(t)
	data := payload(12 << 20)
	path := createOn(t, a, len(data))
	if resp, body := patchOn(t, a, path, 0, bytes.NewReader(data[:6<<20]), 6<<20); resp == nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("first PATCH on A: %v %s", resp, body)
	}
	body := paced(data[6<<20:], 64<<10, 10*time.Millisecond)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = patchOn(t, a, path, 6<<20, body, int64(len(data)-6<<20))
	}()
	for body.sent.Load() < 1<<20 {
		time.Sleep(5 * time.Millisecond)
	}
	a.kill()
	<-done
	killed := time.Now()
	code, offset := headOn(t, b, path)
	took := time.Since(killed)
	if code != http.StatusOK || offset != 6<<20 {
		t.Fatalf("HEAD on B after A was killed: %d, offset %d, want 200 at %d", code, offset, 6<<20)
	}
	if took > 15*time.Second { // tusd gives up on a lock after 20s
		t.Fatalf("HEAD on B took %v: the dead holder's lock outlived its lease", took)
	}
	t.Logf("B answered HEAD with offset %d after %v (lock lease 5s)", offset, took)
	finishOn(t, b, path, data)
	back.assertOneDelivery(t, data)
}

// The instance delivering an upload from the bucket is killed
// mid-delivery: the other reads it from the bucket again and delivers it
// once the claim's lease (5s) ends. The backend sees the interrupted
// delivery and one complete one, byte-identical.
func TestS3DeliveryOfAKilledInstanceIsTakenOver(t *testing.T) {
	// 24 MiB, more than the sockets between A and the backend buffer, so
	// that A's death cuts the delivery short (384 reads of the slow
	// backend: 2s)
	_, a, b, _, back := s3ClusterWith(t, 5*time.Millisecond)
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

// Two clients PATCH one upload on the bucket at once, each through
// another instance: the lock in Redis lets one write at a time, a
// client is never told of success for bytes that were not stored, and
// the upload, finished from the stored offset, reaches the backend
// once, byte-identical.
func TestS3ConcurrentPatchesThroughTwoInstances(t *testing.T) {
	_, a, b, _, back := s3Cluster(t)
	data := payload(8 << 20)
	path := createOn(t, a, len(data))

	first := paced(data, 256<<10, 20*time.Millisecond) // ~0.7s for the whole body
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
	for first.sent.Load() < 1<<20 { // A holds the lock and is reading the body
		time.Sleep(5 * time.Millisecond)
	}
	go send(b, paced(data, 256<<10, 20*time.Millisecond))
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
	t.Logf("answers %+v, stored %d", got, stored)
	if stored < int64(len(data)) {
		finishOn(t, a, path, data)
	}
	back.assertOneDelivery(t, data)
}
