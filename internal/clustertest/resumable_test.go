package clustertest

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// resumableOptions gives each instance a resumable endpoint at /files/
// (its own folder: the default under each instance's data home) that
// delivers to /upload, and an nginx report.
const resumableOptions = "\t\tnginx_report_path /progress\n\t\tresumable /files/ {\n\t\t\tdeliver_to /upload\n\t\t}"

// tusCreate creates a resumable upload of size bytes on inst, in group,
// and returns its ID.
func tusCreate(t testing.TB, inst *instance, size int, group string) string {
	t.Helper()
	header := http.Header{"Tus-Resumable": {"1.0.0"}, "Upload-Length": {strconv.Itoa(size)}}
	if group != "" {
		header.Set("X-Upload-Group", group)
	}
	code, h, body := inst.send(t, http.MethodPost, "/files/", nil, 0, header)
	if code != http.StatusCreated || h.Get("X-Upload-ID") == "" {
		t.Fatalf("creation on %s: %d %s", inst.name, code, body)
	}
	return h.Get("X-Upload-ID")
}

// tusPatch sends data at offset to upload id on inst and returns the
// status code of the answer.
func tusPatch(t testing.TB, inst *instance, id string, offset int, data []byte) (int, []byte) {
	t.Helper()
	header := http.Header{
		"Tus-Resumable": {"1.0.0"},
		"Upload-Offset": {strconv.Itoa(offset)},
		"Content-Type":  {"application/offset+octet-stream"},
	}
	code, _, body := inst.send(t, http.MethodPatch, "/files/"+id, bytes.NewReader(data), int64(len(data)), header)
	return code, body
}

// A resumable upload on instance A is followed through instance B as a
// plain one is: its status (paused between requests, then complete),
// its group, its event stream, its WebSocket and its nginx report; and
// its ID, claimed across the instances at its start, is refused to a
// plain upload through B while it is in flight.
func TestResumableUploadOnAFollowedThroughB(t *testing.T) {
	a, b, up, _ := twoInstances(t, resumableOptions)
	data := payload(2 << 20)
	half := len(data) / 2

	id := tusCreate(t, a, len(data), "resumable-album")
	if code, body := tusPatch(t, a, id, 0, data[:half]); code != http.StatusNoContent {
		t.Fatalf("first PATCH on A: %d %s", code, body)
	}
	paused := b.waitFor(t, id, 10*time.Second, "paused at half through B", func(code int, s status) bool {
		return code == http.StatusOK && s.Status == "paused" && s.Received == int64(half)
	})
	if paused.Total == nil || *paused.Total != int64(len(data)) {
		t.Fatalf("B's status of the paused upload: %+v", paused)
	}
	var g groupStatus
	if code := b.getJSON(t, "/upload/status/?group=resumable-album", &g); code != http.StatusOK || len(g.Uploads) != 1 || g.Uploads[0].ID != id {
		t.Fatalf("the group through B: %d %+v", code, g)
	}
	if report := get(t, b.base+"/progress?X-Progress-ID="+id); report != fmt.Sprintf("{ \"state\" : \"uploading\", \"received\" : %d, \"size\" : %d }\r\n", half, len(data)) {
		t.Fatalf("B's nginx report of the paused upload: %q", report)
	}

	// the ID is in flight across the cluster: a plain upload with it
	// through B is refused, and reaches nobody
	dup := b.upload(id, bytes.NewReader([]byte("not the resumable upload")), 24, nil)
	if dup.code != http.StatusConflict {
		t.Fatalf("a plain upload with the resumable upload's ID through B: %+v, want 409", dup)
	}

	stream := b.subscribe(t, "/upload/events/"+id)
	ws := b.followWS(t, "/upload/ws/"+id)
	if code, body := tusPatch(t, a, id, half, data[half:]); code != http.StatusOK && code != http.StatusNoContent {
		t.Fatalf("last PATCH on A (delivered): %d %s", code, body)
	}
	final := b.waitFor(t, id, 10*time.Second, "complete through B", func(code int, s status) bool {
		return code == http.StatusOK && s.Status == "complete"
	})
	if final.Received != int64(len(data)) {
		t.Fatalf("B's final status: %+v", final)
	}
	if got := up.sha(id); got != sha256Hex(data) {
		t.Fatalf("the upstream got SHA-256 %q, want %s", got, sha256Hex(data))
	}
	if got := checkStream(t, stream.all(t, 10*time.Second), "complete"); got.Received != int64(len(data)) {
		t.Errorf("final event through B: received %d, want %d", got.Received, len(data))
	}
	ws.wait(t, 10*time.Second)
	if ws.status != websocket.StatusNormalClosure || len(ws.messages) == 0 || ws.messages[len(ws.messages)-1].Event != "complete" {
		t.Errorf("WebSocket through B: closed with %v (%v), %d messages", ws.status, ws.err, len(ws.messages))
	}
	if report := get(t, b.base+"/progress?X-Progress-ID="+id); report != "{ \"state\" : \"done\" }\r\n" {
		t.Errorf("B's nginx report after the delivery: %q", report)
	}
	if code := b.getJSON(t, "/upload/status/?group=resumable-album", &g); code != http.StatusOK || g.Status != "complete" || len(g.Uploads) != 1 {
		t.Errorf("the group through B after the delivery: %d %+v", code, g)
	}
	if strings.Contains(b.logText(), "panic") {
		t.Errorf("B's log has a panic:\n%s", b.logText())
	}
}

// A resumable upload paused when its instance was killed is tracked
// again by the instance that replaces it on the same folder: the claim
// the killed process left in Redis blocks it only until its lease ends
// (5 s), after which a request (or a sweep) tracks it again, paused at
// its stored offset; then it completes, delivered once, intact.
func TestPausedUploadIsTrackedAgainAfterARestart(t *testing.T) {
	rs := startRedis(t)
	back := newDeliveries(t, 0)
	options := sharedFolderOptions(t.TempDir())
	a := startInstance(t, "A", rs.URL(), options, back.URL)
	data := payload(1 << 20)
	half := int64(len(data) / 2)
	path := createOn(t, a, len(data))
	id := strings.TrimPrefix(path, "/files/")
	if resp, body := patchOn(t, a, path, 0, bytes.NewReader(data[:half]), half); resp == nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("first PATCH: %v %s", resp, body)
	}
	a.kill()

	a2 := startInstance(t, "A2", rs.URL(), options, back.URL)
	time.Sleep(6 * time.Second) // past the killed process's lease: its record in Redis ends
	deadline := time.Now().Add(20 * time.Second)
	for {
		if code, offset := headOn(t, a2, path); code != http.StatusOK || offset != half {
			t.Fatalf("HEAD after the restart: %d, offset %d, want %d", code, offset, half)
		}
		code, s := a2.status(t, id)
		if code == http.StatusOK && s.Status == "paused" && s.Received == half {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the restart the upload reads %d %+v, want paused at %d", code, s, half)
		}
		time.Sleep(250 * time.Millisecond)
	}
	finishOn(t, a2, path, data)
	back.assertOneDelivery(t, data)
	final := a2.waitFor(t, id, 10*time.Second, "complete after the restart", func(code int, s status) bool {
		return code == http.StatusOK && s.Status == "complete"
	})
	if final.Received != int64(len(data)) {
		t.Fatalf("after the restart: %+v", final)
	}
}
