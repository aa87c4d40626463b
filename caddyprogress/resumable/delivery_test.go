package resumable_test

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
)

func meta(pairs ...string) string {
	var out string
	for i := 0; i+1 < len(pairs); i += 2 {
		if out != "" {
			out += ","
		}
		out += pairs[i] + " " + base64.StdEncoding.EncodeToString([]byte(pairs[i+1]))
	}
	return out
}

// Two PATCH requests: the status counts both, pauses between them, and
// the last one is answered with the backend's answer to the delivery.
func TestPatchesDeliveredRawAsOneRequest(t *testing.T) {
	back := newBackend(t)
	p := startProxy(t, back, "", "nginx_report_path /progress")
	data := payload(3 << 20)
	path := p.create(t, len(data), meta("filename", "report.pdf", "filetype", "application/pdf", "note", "x y"))
	id := idOf(path)

	s := p.waitStatus(t, id, "paused", func(s caddyprogress.Status) bool { return s.Status == "paused" })
	if s.Resumable == nil || s.Resumable.Delivery != "receiving" || s.Resumable.ExpiresAt == nil || s.Received != 0 {
		t.Fatalf("status after creation: %+v %+v", s, s.Resumable)
	}

	resp, body := p.patch(t, path, 0, data[:1<<20])
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Upload-Offset") != "1048576" || resp.Header.Get("Upload-Expires") == "" {
		t.Fatalf("first PATCH: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	s = p.waitStatus(t, id, "paused at 1MiB", func(s caddyprogress.Status) bool { return s.Status == "paused" && s.Received == 1<<20 })
	if s.Resumable.Offset != 1<<20 || *s.Total != int64(len(data)) {
		t.Fatalf("status after the first PATCH: %+v %+v", s, s.Resumable)
	}
	report, body := p.tusRequest(t, http.MethodGet, "/progress?X-Progress-ID="+id, nil, nil)
	if report.StatusCode != http.StatusOK || !strings.Contains(body, `"state" : "uploading", "received" : 1048576, "size" : 3145728`) {
		t.Fatalf("nginx report of a paused upload: %d %s", report.StatusCode, body)
	}

	resp, body = p.patch(t, path, 1<<20, data[1<<20:])
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("X-Backend") != "yes" || resp.Header.Get("Upload-Offset") != "3145728" {
		t.Fatalf("final PATCH: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	var answer struct {
		SHA256 string `json:"sha256"`
		Bytes  int64  `json:"bytes"`
	}
	if err := json.Unmarshal([]byte(body), &answer); err != nil || answer.SHA256 != sha256Hex(data) {
		t.Fatalf("final PATCH answer %q (%v), want the backend's with sha256 %s", body, err, sha256Hex(data))
	}

	got := back.got()
	if len(got) != 1 {
		t.Fatalf("backend got %d requests, want 1", len(got))
	}
	d := got[0]
	if d.method != "POST" || d.path != "/upload" || d.sha256 != sha256Hex(data) || d.bytes != int64(len(data)) {
		t.Fatalf("delivery: %s %s %d bytes sha256 %s", d.method, d.path, d.bytes, d.sha256)
	}
	if d.header.Get("Content-Type") != "application/pdf" || d.header.Get("Upload-Metadata-Filename") != "report.pdf" ||
		d.header.Get("Upload-Metadata-Note") != "x y" || d.header.Get("X-Upload-Id") != id {
		t.Fatalf("delivery headers: %v", d.header)
	}

	s = p.waitStatus(t, id, "complete", func(s caddyprogress.Status) bool { return s.Status == "complete" })
	if s.Received != int64(len(data)) || *s.UpstreamStatus != http.StatusCreated || s.Resumable.Delivery != "delivered" ||
		s.Resumable.Attempts != 1 || s.Resumable.Delivered != int64(len(data)) || s.Resumable.ExpiresAt != nil {
		t.Fatalf("final status: %+v %+v", s, s.Resumable)
	}

	// delivered: HEAD says complete, the bytes are gone from disk
	resp, _ = p.tusRequest(t, http.MethodHead, path, nil, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Upload-Offset") != "3145728" {
		t.Fatalf("HEAD after delivery: %d %v", resp.StatusCode, resp.Header)
	}
	assertNoData(t, p.dir, id)
}

// The upload's data and tusd's info file are gone.
func assertNoData(t testing.TB, dir, id string) {
	t.Helper()
	for _, name := range []string{id, id + ".info"} {
		if _, err := osStat(dir, name); err == nil {
			t.Errorf("%s is still on disk", name)
		}
	}
}

// The events route follows a resumable upload across its requests:
// paused between them, then the final complete event.
func TestEventsFollowAResumableUpload(t *testing.T) {
	back := newBackend(t)
	p := startProxy(t, back, "", "interval 20ms")
	data := payload(2 << 20)
	path := p.create(t, len(data), "")
	id := idOf(path)

	resp, err := p.client.Get(p.base + "/upload/events/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := make(chan string, 100)
	go func() {
		defer close(events)
		scanner := bufio.NewScanner(resp.Body)
		scanner.Buffer(make([]byte, 1<<20), 1<<20)
		event := "message"
		for scanner.Scan() {
			line := scanner.Text()
			if name, ok := strings.CutPrefix(line, "event: "); ok {
				event = name
			}
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				var s caddyprogress.Status
				_ = json.Unmarshal([]byte(data), &s)
				events <- fmt.Sprintf("%s:%s:%d", event, s.Status, s.Received)
				event = "message"
			}
		}
	}()
	await := func(want string) {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case got, ok := <-events:
				if !ok {
					t.Fatalf("the stream ended before %s", want)
				}
				if got == want {
					return
				}
			case <-timeout:
				t.Fatalf("no %s event", want)
			}
		}
	}
	await("message:paused:0")
	p.patch(t, path, 0, data[:1<<20])
	await("message:paused:1048576")
	p.patch(t, path, 1<<20, data[1<<20:])
	await("complete:complete:2097152")
}
