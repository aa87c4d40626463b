package resumable_test

import (
	"net/http"
	"strings"
	"testing"
)

// tus concatenation (what tus-js-client's parallelUploads sends) is not
// offered, as docs/resumable.md says: a partial upload's creation gets a
// clear 400 and nothing is stored, and Tus-Extension does not list it.
func TestConcatenationIsAClear400(t *testing.T) {
	back := newBackend(t)
	p := startProxy(t, back, "")
	resp, body := p.tusRequest(t, http.MethodPost, "/files/", map[string]string{
		"Upload-Length": "10", "Upload-Concat": "partial"}, nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(strings.ToLower(body), "concatenation") {
		t.Fatalf("a partial upload's creation: %d %s", resp.StatusCode, body)
	}
	opts, _ := p.tusRequest(t, http.MethodOptions, "/files/", nil, nil)
	if ext := opts.Header.Get("Tus-Extension"); ext == "" || strings.Contains(ext, "concatenation") {
		t.Fatalf("Tus-Extension: %q", ext)
	}
	if got := back.got(); len(got) != 0 {
		t.Fatalf("the backend got %d deliveries", len(got))
	}
}
