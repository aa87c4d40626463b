package resumable_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// curl with the IETF draft (interop 6): a first request with part of
// the file, then the rest; the last is answered with the backend's answer.
func TestCurlIETFDraft(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	back := newBackend(t)
	p := startProxy(t, back, "ietf_draft")
	file, data := writePayload(t, 2<<20)
	first := filepath.Join(t.TempDir(), "first")
	rest := filepath.Join(t.TempDir(), "rest")
	if err := os.WriteFile(first, data[:1<<20], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rest, data[1<<20:], 0o600); err != nil {
		t.Fatal(err)
	}
	_ = file

	out := curl(t, "-i", "-X", "POST", p.base+"/files/", "-H", "Upload-Draft-Interop-Version: 6", "-H", "Upload-Complete: ?0",
		"-H", "Content-Type: text/plain", "--data-binary", "@"+first)
	if !strings.Contains(out, "HTTP/1.1 104") || !strings.Contains(out, "HTTP/1.1 201") {
		t.Fatalf("first request:\n%s", out)
	}
	loc := header(out, "Location")
	id := idOf(loc)
	s := p.waitStatus(t, id, "paused", func(s caddyprogress.Status) bool { return s.Status == "paused" })
	if s.Received != 1<<20 || s.Total != nil {
		t.Fatalf("status after the first request: %+v", s)
	}

	out = curl(t, "-i", "-X", "PATCH", loc, "-H", "Upload-Draft-Interop-Version: 6", "-H", "Upload-Complete: ?1",
		"-H", "Upload-Offset: 1048576", "-H", "Content-Type: application/partial-upload", "--data-binary", "@"+rest)
	if !strings.Contains(out, "HTTP/1.1 201") || !strings.Contains(out, sha256Hex(data)) {
		t.Fatalf("last request:\n%s", out)
	}
	d := assertDeliveredOnce(t, back, data)
	if d.header.Get("Content-Type") != "text/plain" {
		t.Fatalf("delivered with Content-Type %q", d.header.Get("Content-Type"))
	}
	p.waitStatus(t, id, "complete", func(s caddyprogress.Status) bool { return s.Status == "complete" })
}

func curl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("curl", append([]string{"-sS"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// header finds a header's last value in curl -i output.
func header(out, name string) string {
	var value string
	for _, line := range strings.Split(out, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, name) {
			value = strings.TrimSpace(v)
		}
	}
	return value
}

// An upload without a byte for expire is removed, and ends aborted.
func TestAbandonedUploadExpires(t *testing.T) {
	back := newBackend(t)
	p := startProxy(t, back, "expire 1s")
	data := payload(1 << 20)
	path := p.create(t, len(data), "")
	id := idOf(path)
	if resp, body := p.patch(t, path, 0, data[:1000]); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH: %d %s", resp.StatusCode, body)
	}
	s := p.waitStatus(t, id, "aborted", func(s caddyprogress.Status) bool { return s.Status == "aborted" })
	if !strings.Contains(s.Error, "expired") || s.Received != 1000 {
		t.Fatalf("status of the expired upload: %+v", s)
	}
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), id) {
			t.Errorf("%s is still on disk", e.Name())
		}
	}
	resp, _ := p.tusRequest(t, http.MethodHead, path, nil, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD of the expired upload: %d, want 404", resp.StatusCode)
	}
}

// deliver_as multipart: one file in the configured field, with the tus
// filename; creation-with-upload is answered with the backend's answer.
func TestDeliveredAsMultipart(t *testing.T) {
	back := newBackend(t)
	p := startProxy(t, back, "deliver_as multipart document\n\t\t\tdeliver_method PUT")
	data := payload(300 << 10)
	resp, body := p.tusRequest(t, http.MethodPost, "/files/", map[string]string{
		"Upload-Length":   fmt.Sprint(len(data)),
		"Upload-Metadata": meta("filename", `my "report".pdf`, "filetype", "application/pdf"),
		"Content-Type":    "application/offset+octet-stream",
		"Authorization":   "Bearer secret",
		"Cookie":          "session=abc",
		"X-Upload-Group":  "batch-1",
	}, data)
	if resp.StatusCode != http.StatusCreated || !strings.Contains(body, `"bytes":`) || resp.Header.Get("Location") == "" {
		t.Fatalf("creation with upload: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	got := back.got()
	if len(got) != 1 || got[0].method != http.MethodPut {
		t.Fatalf("deliveries: %+v", got)
	}
	d := got[0]
	field, filename, partType, content := multipartFile(t, d.header.Get("Content-Type"), d.body)
	if field != "document" || filename != `my "report".pdf` || partType != "application/pdf" || !bytes.Equal(content, data) {
		t.Fatalf("multipart part: field %q filename %q type %q, %d bytes", field, filename, partType, len(content))
	}
	if d.header.Get("Authorization") != "Bearer secret" || d.header.Get("Cookie") != "session=abc" || d.header.Get("X-Upload-Group") != "batch-1" {
		t.Fatalf("forwarded headers: %v", d.header)
	}
	_, gs := groupStatus(t, p, "batch-1")
	if gs.Status != "complete" || len(gs.Uploads) != 1 {
		t.Fatalf("group status: %+v", gs)
	}
}

func groupStatus(t testing.TB, p *proxy, group string) (int, caddyprogress.GroupStatus) {
	t.Helper()
	resp, err := p.client.Get(p.base + "/upload/status/?group=" + group)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var g caddyprogress.GroupStatus
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, g
}

// Caddy killed while a delivery waits to retry: started again, it
// delivers the upload once, and never again after it is delivered.
func TestDeliveryPendingAcrossRestartIsDeliveredOnce(t *testing.T) {
	back := newBackend(t)
	back.stop()
	p := newProxy(t, back, "")
	first := p.startChild(t)
	data := payload(1 << 20)
	path := p.create(t, len(data), "")
	id := idOf(path)
	resp, body := p.patch(t, path, 0, data)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("final PATCH with the backend down: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	assertJSONError(t, "final PATCH", body, "retried in the background")
	resp, _ = p.tusRequest(t, http.MethodHead, path, nil, nil)
	if resp.StatusCode != http.StatusLocked || resp.Header.Get("Upload-Offset") != "" {
		t.Fatalf("HEAD while delivering: %d %v", resp.StatusCode, resp.Header)
	}
	_ = first.Process.Kill()
	_ = first.Wait()

	back.start(t)
	second := p.startChild(t) // its first request brings the route a delivery waits for
	s := p.waitStatus(t, id, "complete", func(s caddyprogress.Status) bool { return s.Status == "complete" })
	if s.Resumable.Delivery != "delivered" || s.Resumable.Attempts < 2 {
		t.Fatalf("status after the restart: %+v %+v", s, s.Resumable)
	}
	assertDeliveredOnce(t, back, data)
	resp, _ = p.tusRequest(t, http.MethodHead, path, nil, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Upload-Offset") != fmt.Sprint(len(data)) {
		t.Fatalf("HEAD after delivery: %d %v", resp.StatusCode, resp.Header)
	}

	_ = second.Process.Kill()
	_ = second.Wait()
	p.startChild(t)
	time.Sleep(500 * time.Millisecond)
	p.status(t, id)
	assertDeliveredOnce(t, back, data)
}

// Uppy (@uppy/core with @uppy/tus, headless) uploads three files in one
// group; the group's aggregate status is complete.
func TestUppyGroupOfThree(t *testing.T) {
	needNode(t)
	back := newBackend(t)
	p := startProxy(t, back, "")
	var files []string
	var sizes int64
	for i, size := range []int{100 << 10, 2 << 20, 5 << 20} {
		path := filepath.Join(t.TempDir(), fmt.Sprintf("file%d.bin", i))
		if err := os.WriteFile(path, payload(size), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, path)
		sizes += int64(size)
	}
	c := runNode(t, "uppy-group.mjs", append([]string{p.base + "/files/", "album-7"}, files...)...)
	ev := c.await(t, "done", 60*time.Second)
	if ok, _ := ev["successful"].([]any); len(ok) != 3 {
		t.Fatalf("Uppy said %v", ev)
	}
	_, g := groupStatus(t, p, "album-7")
	if g.Status != "complete" || len(g.Uploads) != 3 || g.Received != sizes || *g.Total != sizes {
		t.Fatalf("group status: %+v", g)
	}
	if len(back.got()) != 3 {
		t.Fatalf("the backend got %d deliveries, want 3", len(back.got()))
	}
}

// DELETE terminates an upload: its files are gone, it ends aborted, and
// nothing is delivered.
func TestTerminatedUploadIsRemoved(t *testing.T) {
	back := newBackend(t)
	p := startProxy(t, back, "")
	data := payload(1 << 20)
	path := p.create(t, len(data), "")
	id := idOf(path)
	p.patch(t, path, 0, data[:1000])
	resp, body := p.tusRequest(t, http.MethodDelete, path, nil, nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", resp.StatusCode, body)
	}
	s := p.waitStatus(t, id, "aborted", func(s caddyprogress.Status) bool { return s.Status == "aborted" })
	if s.Error != "terminated by the client" || s.Received != 1000 {
		t.Fatalf("status after DELETE: %+v", s)
	}
	entries, _ := os.ReadDir(p.dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), id) {
			t.Errorf("%s is still on disk", e.Name())
		}
	}
	if resp, _ := p.tusRequest(t, http.MethodHead, path, nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD after DELETE: %d, want 404", resp.StatusCode)
	}
	if len(back.got()) != 0 {
		t.Errorf("the backend got %d requests, want none", len(back.got()))
	}
}

// A config reload keeps a delivery waiting to retry: after the reload,
// the backend back, it is delivered once.
func TestReloadKeepsAPendingDelivery(t *testing.T) {
	back := newBackend(t)
	back.stop()
	p := startProxy(t, back, "")
	data := payload(1 << 20)
	path := p.create(t, len(data), "")
	id := idOf(path)
	if resp, body := p.patch(t, path, 0, data); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("final PATCH with the backend down: %d %s", resp.StatusCode, body)
	}
	testcaddy.Load(t, p.config)     // a reload: the new config is provisioned before the old one is cleaned up
	p.client.CloseIdleConnections() // the old server closes them
	back.start(t)
	s := p.waitStatus(t, id, "complete", func(s caddyprogress.Status) bool { return s.Status == "complete" })
	if s.Resumable.Attempts < 2 {
		t.Fatalf("status: %+v %+v", s, s.Resumable)
	}
	time.Sleep(300 * time.Millisecond)
	assertDeliveredOnce(t, back, data)
}

// tusd's 500s carry Go errors with file paths: the client gets a plain
// sentence instead. A backend's own 500 passes through as it is.
func TestInternalErrorsHideDetailButNotTheBackendsAnswer(t *testing.T) {
	back := newBackend(t)
	p := startProxy(t, back, "")
	path := p.create(t, 100, "")
	id := idOf(path)
	// the upload's data goes to /dev/full, a disk that is always full
	infoPath := filepath.Join(p.dir, id+".info")
	var info map[string]any
	raw, err := os.ReadFile(infoPath)
	if err == nil {
		err = json.Unmarshal(raw, &info)
	}
	if err != nil {
		t.Fatal(err)
	}
	info["Storage"].(map[string]any)["Path"] = "/dev/full"
	raw, _ = json.Marshal(info)
	if err := os.WriteFile(infoPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	resp, body := p.patch(t, path, 0, payload(100))
	if resp.StatusCode != http.StatusInternalServerError || strings.Contains(body, p.dir) || strings.Contains(body, "/") {
		t.Fatalf("PATCH failing inside tusd: %d %q", resp.StatusCode, body)
	}
	assertJSONError(t, "PATCH failing inside tusd", body, "could not be stored")

	back.status.Store(500)
	data := payload(1000)
	path = p.create(t, len(data), "")
	resp, body = p.patch(t, path, 0, data)
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(body, sha256Hex(data)) {
		t.Fatalf("the backend's 500: %d %q, want its own answer", resp.StatusCode, body)
	}
}

// A HEAD that waited for tusd's lock while another request delivered the
// upload finds its files gone: it is answered from the upload's record
// (complete, offset = length), not with tusd's 404, which would make a
// tus client upload the file again.
func TestHeadWaitingForTheLockWhileDeliveredSeesComplete(t *testing.T) {
	back := newBackend(t)
	p := startProxy(t, back, "")
	path := p.create(t, 10, "")
	id := idOf(path)
	p.patch(t, path, 0, []byte("hello"))

	// hold tusd's lock of the upload, as a request delivering it would
	lock := filepath.Join(p.dir, id+".lock")
	if err := os.WriteFile(lock, []byte(fmt.Sprint(os.Getpid())), 0o600); err != nil {
		t.Fatal(err)
	}
	answered := make(chan *http.Response, 1)
	go func() {
		resp, _ := p.tusRequest(t, http.MethodHead, path, nil, nil)
		answered <- resp
	}()
	time.Sleep(300 * time.Millisecond) // the HEAD is past the record check, waiting for the lock

	// the other request delivers: the record says so, the bytes go, the lock is released
	recordPath := filepath.Join(p.dir, id+".delivery")
	raw, err := os.ReadFile(recordPath)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	rec["delivery"], rec["size"] = "delivered", 10
	raw, _ = json.Marshal(rec)
	if err := os.WriteFile(recordPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{id, id + ".info", id + ".lock"} {
		_ = os.Remove(filepath.Join(p.dir, name))
	}

	select {
	case resp := <-answered:
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Upload-Offset") != "10" {
			t.Fatalf("HEAD: %d %v, want 200 with Upload-Offset 10", resp.StatusCode, resp.Header)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the HEAD was not answered")
	}
}

// With status_access token, the creation's answer carries the upload's
// and its group's tokens, and the status needs them, as for any upload.
func TestTokensOfAResumableUpload(t *testing.T) {
	back := newBackend(t)
	p := startProxy(t, back, "", "status_access token", "token_secret 0123456789abcdef0123456789abcdef")
	// a group is joined with its token, from its reservation (issue 15)
	reserved, _ := p.tusRequest(t, http.MethodPost, "/upload/status/?group", map[string]string{"Tus-Resumable": ""}, nil)
	group, reservedToken := reserved.Header.Get("X-Upload-Group"), reserved.Header.Get("X-Upload-Group-Token")
	resp, body := p.tusRequest(t, http.MethodPost, "/files/", map[string]string{"Upload-Length": "10", "X-Upload-Group": group, "X-Upload-Group-Token": reservedToken}, nil)
	token, groupToken := resp.Header.Get("X-Upload-Token"), resp.Header.Get("X-Upload-Group-Token")
	if resp.StatusCode != http.StatusCreated || token == "" || groupToken == "" || groupToken != reservedToken {
		t.Fatalf("creation: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	id := idOf(resp.Header.Get("Location"))
	if code, _ := p.status(t, id); code != http.StatusNotFound {
		t.Fatalf("status without the token: %d, want 404", code)
	}
	req, _ := http.NewRequest(http.MethodGet, p.base+"/upload/status/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	got, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Body.Close()
	var s caddyprogress.Status
	if err := json.NewDecoder(got.Body).Decode(&s); err != nil || got.StatusCode != http.StatusOK || s.Resumable == nil || s.Status != "paused" {
		t.Fatalf("status with the token: %d %+v %v", got.StatusCode, s, err)
	}
}

// A resumable path that overlaps the status route is refused at load.
func TestResumablePathOverlappingARouteIsRefused(t *testing.T) {
	cfg := globalOptions + `http://127.0.0.1:1 {
	upload_progress {
		resumable /upload/status/files/ {
			deliver_to /upload
		}
	}
}`
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cfg), nil)
	if err != nil {
		t.Fatal(err)
	}
	var config caddy.Config
	if err := json.Unmarshal(adapted, &config); err != nil {
		t.Fatal(err)
	}
	err = caddy.Validate(&config)
	if err == nil || !strings.Contains(err.Error(), "overlap") {
		t.Fatalf("loading a resumable path under the status route: %v, want an error saying they overlap", err)
	}
}

// A failed delivery's bytes stay for expire (HEAD says 410), then go.
func TestFailedDeliveryIsRemovedAfterExpire(t *testing.T) {
	back := newBackend(t)
	back.status.Store(http.StatusForbidden)
	p := startProxy(t, back, "expire 1s")
	data := payload(1000)
	path := p.create(t, len(data), "")
	id := idOf(path)
	if resp, _ := p.patch(t, path, 0, data); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("final PATCH: %d, want the backend's 403", resp.StatusCode)
	}
	if _, err := osStat(p.dir, id); err != nil {
		t.Fatalf("the failed upload's bytes are gone at once: %v", err)
	}
	if resp, _ := p.tusRequest(t, http.MethodHead, path, nil, nil); resp.StatusCode != http.StatusGone {
		t.Fatalf("HEAD of the failed upload: %d, want 410", resp.StatusCode)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries, _ := os.ReadDir(p.dir)
		left := 0
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), id) {
				left++
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d files of the failed upload are still on disk after expire", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if resp, _ := p.tusRequest(t, http.MethodHead, path, nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("HEAD after expire: %d, want 404", resp.StatusCode)
	}
}
