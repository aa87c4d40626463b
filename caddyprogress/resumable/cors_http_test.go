package resumable_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// corsOrigin is the page origin the CORS tests allow.
const corsOrigin = "http://app.example:8080"

// checkCORS checks that an answer allows corsOrigin once, with
// credentials, and exposes the tus and upload headers.
func checkCORS(t *testing.T, what string, resp *http.Response) {
	t.Helper()
	h := resp.Header
	if got := h.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != corsOrigin {
		t.Errorf("%s (%d): Access-Control-Allow-Origin %q, want %q once", what, resp.StatusCode, got, corsOrigin)
	}
	if got := h.Values("Access-Control-Allow-Credentials"); len(got) != 1 || got[0] != "true" {
		t.Errorf("%s (%d): Access-Control-Allow-Credentials %q, want true once", what, resp.StatusCode, got)
	}
	if resp.Request.Method == http.MethodOptions {
		return
	}
	expose := strings.Join(h.Values("Access-Control-Expose-Headers"), ", ")
	for _, name := range []string{"Location", "Upload-Offset", "Upload-Length", "Tus-Resumable", "X-Upload-Token", "X-Upload-ID"} {
		if !strings.Contains(expose, name) {
			t.Errorf("%s (%d): Access-Control-Expose-Headers %q lack %s", what, resp.StatusCode, expose, name)
		}
	}
}

// TestCORSOriginsAnswerEveryTusRequest runs a whole upload from an
// allowed origin (cors_origins): the preflight allows the tus and upload
// headers, and every answer carries the CORS headers, including the
// refusals this package writes before tusd (unknown upload 404, bad ID
// 400, disk full 507) and the answers for an upload whose delivery
// ended, so a browser sees their status. Another origin gets 403.
func TestCORSOriginsAnswerEveryTusRequest(t *testing.T) {
	back := newBackend(t)
	// a backend with CORS of its own: the tus endpoint's are the proxy's
	back.header.Store(&http.Header{"Access-Control-Allow-Origin": {"*"}, "Access-Control-Expose-Headers": {"X-Backend"}})
	p := startProxy(t, back, "max_disk 1MiB\n\t\t\tcors_origins "+corsOrigin)
	from := map[string]string{"Origin": corsOrigin}
	with := func(more ...string) map[string]string {
		h := map[string]string{"Origin": corsOrigin}
		for i := 0; i+1 < len(more); i += 2 {
			h[more[i]] = more[i+1]
		}
		return h
	}

	resp, _ := p.tusRequest(t, http.MethodOptions, "/files/", with("Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "tus-resumable,upload-length,x-upload-group"), nil)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("preflight: %d, want 200", resp.StatusCode)
	}
	checkCORS(t, "preflight", resp)
	allow := resp.Header.Get("Access-Control-Allow-Headers")
	for _, name := range []string{"Tus-Resumable", "Upload-Length", "X-Upload-Token", "X-Upload-Group", "X-Upload-Group-Token", "X-Upload-ID"} {
		if !strings.Contains(allow, name) {
			t.Errorf("preflight: Access-Control-Allow-Headers %q lack %s", allow, name)
		}
	}
	if methods := resp.Header.Get("Access-Control-Allow-Methods"); !strings.Contains(methods, "PATCH") || !strings.Contains(methods, "DELETE") {
		t.Errorf("preflight: Access-Control-Allow-Methods %q", methods)
	}

	data := payload(1000)
	resp, body := p.tusRequest(t, http.MethodPost, "/files/", with("Upload-Length", fmt.Sprint(len(data))), nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("creation: %d %s", resp.StatusCode, body)
	}
	checkCORS(t, "creation", resp)
	path := resp.Header.Get("Location")
	path = path[strings.Index(path, "/files/"):]

	resp, body = p.tusRequest(t, http.MethodPatch, "/files/0123456789abcdef0123456789abcdef",
		with("Upload-Offset", "0", "Content-Type", "application/offset+octet-stream"), []byte("x"))
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown upload: %d %s, want 404", resp.StatusCode, body)
	}
	checkCORS(t, "unknown upload", resp)
	resp, body = p.tusRequest(t, http.MethodHead, "/files/not.an.id", from, nil)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad ID: %d %s, want 400", resp.StatusCode, body)
	}
	checkCORS(t, "bad ID", resp)
	resp, body = p.tusRequest(t, http.MethodPost, "/files/", with("Upload-Length", "10", "Upload-Metadata", meta("filename", "a.txt", "FILENAME", "a.txt")), nil)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad metadata: %d %s, want 400", resp.StatusCode, body)
	}
	checkCORS(t, "bad metadata", resp)
	resp, body = p.tusRequest(t, http.MethodPost, "/files/", with("Upload-Length", fmt.Sprint(1<<20)), nil)
	if resp.StatusCode != http.StatusInsufficientStorage {
		t.Errorf("creation over max_disk: %d %s, want 507", resp.StatusCode, body)
	}
	checkCORS(t, "creation over max_disk", resp)

	resp, body = p.tusRequest(t, http.MethodPatch, path, with("Upload-Offset", "0", "Content-Type", "application/offset+octet-stream"), data)
	if resp.StatusCode != http.StatusCreated || !strings.Contains(body, sha256Hex(data)) {
		t.Fatalf("last PATCH: %d %s, want the backend's 201 with the hash", resp.StatusCode, body)
	}
	checkCORS(t, "last PATCH (the backend's answer)", resp)
	resp, _ = p.tusRequest(t, http.MethodHead, path, from, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Upload-Offset") != fmt.Sprint(len(data)) {
		t.Errorf("HEAD of the delivered upload: %d %v", resp.StatusCode, resp.Header)
	}
	checkCORS(t, "HEAD of the delivered upload", resp)
	resp, body = p.tusRequest(t, http.MethodPatch, path, with("Upload-Offset", "0", "Content-Type", "application/offset+octet-stream"), data)
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("PATCH of the delivered upload: %d %s, want 409", resp.StatusCode, body)
	}
	checkCORS(t, "PATCH of the delivered upload", resp)

	resp, body = p.tusRequest(t, http.MethodPost, "/files/", map[string]string{"Origin": "http://evil.example", "Upload-Length": "10"}, nil)
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("creation from another origin: %d %v %s, want 403 without CORS headers", resp.StatusCode, resp.Header, body)
	}
	resp, body = p.tusRequest(t, http.MethodHead, "/files/0123456789abcdef0123456789abcdef", map[string]string{"Origin": "http://evil.example"}, nil)
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("refusal for another origin: %d %v %s, want no CORS headers", resp.StatusCode, resp.Header, body)
	}
	if got := back.got(); len(got) != 1 {
		t.Errorf("the backend got %d deliveries, want 1", len(got))
	}
}

// TestCORSOriginsLeaveSameOriginPagesAlone checks that cors_origins,
// which refuses other origins, does not refuse the proxy's own pages:
// browsers send Origin on a same-origin POST, PATCH and DELETE too, and
// such a request is not cross-origin.
func TestCORSOriginsLeaveSameOriginPagesAlone(t *testing.T) {
	back := newBackend(t)
	p := startProxy(t, back, "cors_origins "+corsOrigin)
	data := payload(1000)
	own := map[string]string{"Origin": p.base, "Upload-Length": fmt.Sprint(len(data))}
	resp, body := p.tusRequest(t, http.MethodPost, "/files/", own, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("creation from the proxy's own origin %s: %d %s, want 201", p.base, resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	resp, body = p.tusRequest(t, http.MethodPatch, loc[strings.Index(loc, "/files/"):], map[string]string{"Origin": p.base,
		"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}, data)
	if resp.StatusCode != http.StatusCreated || !strings.Contains(body, sha256Hex(data)) {
		t.Errorf("PATCH from the proxy's own origin: %d %s, want the backend's 201 with the hash", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("a same-origin answer carries Access-Control-Allow-Origin %q", got)
	}
}
