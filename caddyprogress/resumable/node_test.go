package resumable_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
)

// tusOptions encodes the options of tus-upload.mjs.
func tusOptions(t testing.TB, opts map[string]any) string {
	t.Helper()
	b, err := json.Marshal(opts)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// assertDeliveredOnce checks the backend got the data exactly once.
func assertDeliveredOnce(t testing.TB, back *backend, data []byte) delivery {
	t.Helper()
	got := back.got()
	if len(got) != 1 {
		t.Fatalf("the backend got %d deliveries, want 1", len(got))
	}
	if got[0].sha256 != sha256Hex(data) || got[0].bytes != int64(len(data)) {
		t.Fatalf("the backend got %d bytes with sha256 %s, want %d bytes with %s", got[0].bytes, got[0].sha256, len(data), sha256Hex(data))
	}
	return got[0]
}

// assertSuccessAnswer checks tus-js-client's onSuccess saw the backend's
// answer to the delivery.
func assertSuccessAnswer(t testing.TB, ev map[string]any, data []byte) {
	t.Helper()
	var answer struct {
		SHA256 string `json:"sha256"`
	}
	body, _ := ev["body"].(string)
	if ev["status"] != float64(201) || json.Unmarshal([]byte(body), &answer) != nil || answer.SHA256 != sha256Hex(data) {
		t.Fatalf("onSuccess saw %v, want the backend's 201 with sha256 %s", ev, sha256Hex(data))
	}
}

// tus-js-client uploads 64 MiB, pauses at about half, and resumes in the
// same process: the backend gets the file once, byte-identical, and
// onSuccess sees the backend's answer.
func TestTusJSClientPausedAndResumed(t *testing.T) {
	needNode(t)
	back := newBackend(t)
	p := startProxy(t, back, "", "rate_limit 32MiB")
	file, data := writePayload(t, 64<<20)

	start := time.Now()
	c := runNode(t, "tus-upload.mjs", p.base+"/files/", file, tusOptions(t, map[string]any{"pauseAt": 32 << 20}))
	created := c.await(t, "created", 10*time.Second)
	id := idOf(created["url"].(string))
	c.await(t, "paused", 30*time.Second)

	s := p.waitStatus(t, id, "paused", func(s caddyprogress.Status) bool { return s.Status == "paused" })
	if s.Received <= 0 || s.Received >= int64(len(data)) || s.Resumable.Offset != s.Received || *s.RateLimit != 32<<20 {
		t.Fatalf("paused status: %+v %+v", s, s.Resumable)
	}
	c.send(t, "resume")
	assertSuccessAnswer(t, c.await(t, "success", 60*time.Second), data)
	if took := time.Since(start); took < 1900*time.Millisecond {
		t.Errorf("64 MiB with rate_limit 32MiB took %v; the throttle allows no less than 2s", took)
	}
	assertDeliveredOnce(t, back, data)
	s = p.waitStatus(t, id, "complete", func(s caddyprogress.Status) bool { return s.Status == "complete" })
	if s.Received != int64(len(data)) || s.Resumable.Delivery != "delivered" {
		t.Fatalf("final status: %+v %+v", s, s.Resumable)
	}
}

// The client process is killed mid-upload; a new process finds the
// upload URL in tus-js-client's file URL storage and resumes it.
func TestTusJSClientKilledThenResumedByANewProcess(t *testing.T) {
	needNode(t)
	back := newBackend(t)
	p := startProxy(t, back, "", "rate_limit 32MiB")
	file, data := writePayload(t, 24<<20)
	storage := filepath.Join(t.TempDir(), "tus-urls.json")

	first := runNode(t, "tus-upload.mjs", p.base+"/files/", file, tusOptions(t, map[string]any{"exitAt": 8 << 20, "urlStorage": storage}))
	id := idOf(first.await(t, "created", 10*time.Second)["url"].(string))
	first.await(t, "exiting", 30*time.Second)
	_ = first.cmd.Wait()
	s := p.waitStatus(t, id, "paused", func(s caddyprogress.Status) bool { return s.Status == "paused" })
	if s.Received >= int64(len(data)) {
		t.Fatalf("status after the client was killed: %+v", s)
	}

	second := runNode(t, "tus-upload.mjs", p.base+"/files/", file, tusOptions(t, map[string]any{"urlStorage": storage}))
	found := second.next(t, 10*time.Second)
	if found["event"] != "found" || idOf(found["url"].(string)) != id {
		t.Fatalf("the second process said %v, want it to find upload %s", found, id)
	}
	assertSuccessAnswer(t, second.await(t, "success", 60*time.Second), data)
	assertDeliveredOnce(t, back, data)
}

// The Caddy process is killed while a PATCH is streaming, and started
// again: the client retries and resumes from the bytes on disk.
func TestCaddyKilledMidUploadAndStartedAgain(t *testing.T) {
	needNode(t)
	back := newBackend(t)
	p := newProxy(t, back, "", "rate_limit 16MiB")
	first := p.startChild(t)
	file, data := writePayload(t, 32<<20)

	c := runNode(t, "tus-upload.mjs", p.base+"/files/", file, tusOptions(t, map[string]any{"retryDelays": []int{200, 500, 1000, 2000, 4000}}))
	id := idOf(c.await(t, "created", 10*time.Second)["url"].(string))
	s := p.waitStatus(t, id, "8MiB in", func(s caddyprogress.Status) bool { return s.Received >= 8<<20 })
	if s.Status != "uploading" {
		t.Fatalf("status mid-upload: %+v", s)
	}

	_ = first.Process.Kill()
	_ = first.Wait()
	// the status counts bytes as they are read from the client, and the
	// file gets them just after: at the kill it may lag by a read or two
	stored, err := osStat(p.dir, id)
	if err != nil || stored.Size() < 7<<20 || stored.Size() >= int64(len(data)) {
		t.Fatalf("after the kill, %v bytes are on disk (%v)", stored, err)
	}
	p.startChild(t)
	assertSuccessAnswer(t, c.await(t, "success", 60*time.Second), data)
	assertDeliveredOnce(t, back, data)
	s = p.waitStatus(t, id, "complete", func(s caddyprogress.Status) bool { return s.Status == "complete" })
	// the record made after the restart starts from the bytes on disk
	if s.Received != int64(len(data)) || s.Resumable.Offset != int64(len(data)) {
		t.Fatalf("final status %+v %+v", s, s.Resumable)
	}
	t.Logf("%d of %d bytes were on disk when Caddy was killed", stored.Size(), len(data))
}

// The backend is down when the last byte arrives: the client is not
// told of success; the backend comes back within the retries, and the
// upload is delivered once, its status complete.
func TestBackendDownAtDeliveryThenBack(t *testing.T) {
	needNode(t)
	back := newBackend(t)
	p := startProxy(t, back, "deliver_retries 4")
	back.stop()
	file, data := writePayload(t, 4<<20)

	c := runNode(t, "tus-upload.mjs", p.base+"/files/", file, tusOptions(t, map[string]any{"retryDelays": []int{500, 1000, 1000, 2000, 2000, 4000, 4000}}))
	id := idOf(c.await(t, "created", 10*time.Second)["url"].(string))
	s := p.waitStatus(t, id, "a failed attempt", func(s caddyprogress.Status) bool {
		return s.Resumable != nil && s.Resumable.Attempts >= 1
	})
	if s.Status != "delivering" || s.Resumable.Delivery != "delivering" || s.Received != int64(len(data)) {
		t.Fatalf("status while the backend is down: %+v %+v", s, s.Resumable)
	}
	time.Sleep(1500 * time.Millisecond) // the client retries meanwhile
	select {
	case ev := <-c.events:
		t.Fatalf("while the backend is down, the client said %v", ev)
	default:
	}

	back.start(t)
	ev := c.await(t, "success", 60*time.Second)
	if ev["status"] != float64(200) && ev["status"] != float64(201) {
		t.Fatalf("success with %v", ev)
	}
	assertDeliveredOnce(t, back, data)
	s = p.waitStatus(t, id, "complete", func(s caddyprogress.Status) bool { return s.Status == "complete" })
	if s.Resumable.Attempts < 2 || *s.UpstreamStatus != 201 {
		t.Fatalf("final status: %+v %+v", s, s.Resumable)
	}
}

// A 4xx from the backend is final: the client sees it, the upload ends
// in error with that status.
func TestBackendRejectionIsFinal(t *testing.T) {
	needNode(t)
	back := newBackend(t)
	back.status.Store(422)
	p := startProxy(t, back, "")
	file, data := writePayload(t, 1<<20)

	c := runNode(t, "tus-upload.mjs", p.base+"/files/", file, "{}")
	id := idOf(c.await(t, "created", 10*time.Second)["url"].(string))
	ev := c.await(t, "error", 30*time.Second)
	if ev["status"] != float64(422) || !strings.Contains(ev["body"].(string), sha256Hex(data)) {
		t.Fatalf("the client saw %v, want the backend's 422", ev)
	}
	s := p.waitStatus(t, id, "error", func(s caddyprogress.Status) bool { return s.Status == "error" })
	if *s.UpstreamStatus != 422 || s.Resumable.Delivery != "failed" || s.Resumable.Attempts != 1 || s.Resumable.ExpiresAt == nil {
		t.Fatalf("final status: %+v %+v", s, s.Resumable)
	}
	if len(back.got()) != 1 {
		t.Fatalf("the backend got %d deliveries, want 1 (no retry after a 4xx)", len(back.got()))
	}
	resp, _ := p.tusRequest(t, "HEAD", "/files/"+id, nil, nil)
	if resp.StatusCode != 410 {
		t.Fatalf("HEAD of a failed upload: %d, want 410", resp.StatusCode)
	}
}
