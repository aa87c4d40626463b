package resumable_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
)

// On one instance (tusd's file locks), a client that resumes through a
// new connection while its old PATCH still holds the upload's lock asks
// the old one to let go: the old PATCH keeps the bytes it stored and is
// answered as tus answers a locked upload (423, Retry-After, JSON), not
// tusd's 400 that tus clients do not retry; the new request goes on.
func TestInterruptedPatchIsAnsweredLocked(t *testing.T) {
	back := newBackend(t)
	p := startProxy(t, back, "")
	data := payload(1 << 20)
	path := p.create(t, len(data), "")
	id := idOf(path)

	body, feed := io.Pipe()
	defer feed.Close()
	req, err := http.NewRequest(http.MethodPatch, p.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(data))
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Offset", "0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	answered := make(chan *http.Response, 1)
	go func() {
		resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
		if err != nil {
			t.Errorf("the first PATCH: %v", err)
		}
		answered <- resp
	}()
	const head = 64 << 10
	if _, err := feed.Write(data[:head]); err != nil {
		t.Fatal(err)
	}
	p.waitStatus(t, id, "the first bytes counted", func(s caddyprogress.Status) bool { return s.Received >= head })

	// the client resumes on a new connection: HEAD takes the lock over
	resp, _ := p.tusRequest(t, http.MethodHead, path, nil, nil)
	offset, _ := strconv.Atoi(resp.Header.Get("Upload-Offset"))
	if resp.StatusCode != http.StatusOK || offset != head {
		t.Fatalf("HEAD while the first PATCH held the lock: %d, offset %d, want 200 at %d", resp.StatusCode, offset, head)
	}
	first := <-answered
	if first == nil {
		t.Fatal("the first PATCH got no answer")
	}
	defer first.Body.Close()
	got, _ := io.ReadAll(first.Body)
	if first.StatusCode != http.StatusLocked || first.Header.Get("Retry-After") == "" ||
		!strings.Contains(first.Header.Get("Content-Type"), "application/json") || !strings.Contains(string(got), `"error"`) {
		t.Fatalf("the interrupted PATCH: %d %v %s, want 423 with Retry-After and a JSON error", first.StatusCode, first.Header, got)
	}
	feed.Close()

	if resp, body := p.patch(t, path, head, data[head:]); resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusNoContent {
		t.Fatalf("the resumed PATCH: %d %s", resp.StatusCode, body)
	}
	deliveries := back.got()
	if len(deliveries) != 1 || deliveries[0].sha256 != sha256Hex(data) {
		t.Fatalf("deliveries %+v, want one of the whole file", deliveries)
	}
}
