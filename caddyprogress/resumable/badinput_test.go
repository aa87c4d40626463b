package resumable_test

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// assertJSONError checks a refusal's {"error": "..."} body.
func assertJSONError(t testing.TB, what string, body, contains string) {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || !strings.Contains(e.Error, contains) {
		t.Errorf("%s: body %q, want a JSON error saying %q", what, body, contains)
	}
}

// Bad requests get tus-conform or JSON errors; nothing is delivered.
func TestBadRequestsAreRefused(t *testing.T) {
	back := newBackend(t)
	p := startProxy(t, back, "max_size 1MiB\n\t\t\tmax_disk 3MiB")
	data := payload(100)
	path := p.create(t, len(data), meta("filename", "a.txt"))

	resp, body := p.patch(t, path, 10, data)
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("wrong Upload-Offset: %d %s, want 409", resp.StatusCode, body)
	}
	resp, body = p.tusRequest(t, http.MethodPatch, path, map[string]string{"Tus-Resumable": "", "Upload-Offset": "0",
		"Content-Type": "application/offset+octet-stream"}, data)
	if resp.StatusCode != http.StatusPreconditionFailed {
		t.Errorf("no Tus-Resumable: %d %s, want 412", resp.StatusCode, body)
	}
	resp, body = p.tusRequest(t, http.MethodPost, "/files/", map[string]string{"Upload-Length": "1048577"}, nil)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("over max_size: %d %s, want 413", resp.StatusCode, body)
	}
	resp, body = p.tusRequest(t, http.MethodOptions, "/files/", nil, nil)
	if resp.Header.Get("Tus-Max-Size") != "1048576" || !strings.Contains(resp.Header.Get("Tus-Extension"), "expiration") {
		t.Errorf("OPTIONS: %d %v", resp.StatusCode, resp.Header)
	}

	// max_disk: three uploads of 1MiB fit, the fourth does not
	for i := range 2 {
		p.create(t, 1<<20, "")
		_ = i
	}
	resp, body = p.tusRequest(t, http.MethodPost, "/files/", map[string]string{"Upload-Length": "1048576"}, nil)
	if resp.StatusCode != http.StatusInsufficientStorage {
		t.Errorf("over max_disk: %d %s, want 507", resp.StatusCode, body)
	}
	assertJSONError(t, "over max_disk", body, "max_disk")

	// a deferred length reserves what it stores, so its PATCH is the one refused
	resp, body = p.tusRequest(t, http.MethodPost, "/files/", map[string]string{"Upload-Defer-Length": "1"}, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("creation with a deferred length: %d %s", resp.StatusCode, body)
	}
	deferred := resp.Header.Get("Location")
	deferred = deferred[strings.Index(deferred, "/files/"):]
	resp, body = p.patch(t, deferred, 0, payload(1<<20))
	if resp.StatusCode != http.StatusInsufficientStorage {
		t.Errorf("PATCH of a deferred length over max_disk: %d %s, want 507", resp.StatusCode, body)
	}
	resp, body = p.tusRequest(t, http.MethodPatch, deferred, map[string]string{"Upload-Offset": "0", "Upload-Length": "100",
		"Content-Type": "application/offset+octet-stream"}, data)
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("PATCH declaring the length and sending all of it: %d %s, want the backend's 201", resp.StatusCode, body)
	}

	resp, body = p.tusRequest(t, http.MethodHead, "/files/0123456789abcdef0123456789abcdef", nil, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown ID: %d, want 404", resp.StatusCode)
	}
	resp, body = p.patch(t, "/files/0123456789abcdef0123456789abcdef", 0, data)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("PATCH of an unknown ID: %d, want 404", resp.StatusCode)
	}
	assertJSONError(t, "unknown ID", body, "no upload with ID")

	for _, name := range []string{"a/b", `a\b`, "a\x00b"} {
		resp, body = p.tusRequest(t, http.MethodPost, "/files/", map[string]string{"Upload-Length": "10",
			"Upload-Metadata": meta("filename", name)}, nil)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("filename %q: %d %s, want 400", name, resp.StatusCode, body)
		}
		assertJSONError(t, "filename "+name, body, "filename")
	}
	if got := back.got(); len(got) != 1 || got[0].sha256 != sha256Hex(data) {
		t.Errorf("the backend got %d requests, want only the deferred-length upload", len(got))
	}
}

// IDs that climb out of the upload folder are refused before tusd sees
// them: nothing outside dir is read, written or deleted.
func TestPathTraversalInIDsIsRefused(t *testing.T) {
	back := newBackend(t)
	p := startProxy(t, back, "")
	p.create(t, 10, "") // makes the folder
	parent := filepath.Dir(p.dir)
	for _, name := range []string{"victim", "victim.info", "victim.delivery"} {
		if err := os.WriteFile(filepath.Join(parent, name), []byte(`{"ID":"victim","Size":6,"Offset":0}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	for _, raw := range []string{"..%2Fvictim", "%2e%2e%2fvictim", "..%2F..%2Fvictim", "%2E%2E%5Cvictim", "..", "a%00b"} {
		for _, method := range []string{http.MethodHead, http.MethodPatch, http.MethodDelete} {
			code := rawRequest(t, p, method, "/files/"+raw)
			if code != http.StatusBadRequest && code != http.StatusNotFound {
				t.Errorf("%s /files/%s: %d, want 400 or 404", method, raw, code)
			}
		}
	}
	for _, name := range []string{"victim", "victim.info", "victim.delivery"} {
		data, err := os.ReadFile(filepath.Join(parent, name))
		if err != nil || string(data) != `{"ID":"victim","Size":6,"Offset":0}` {
			t.Errorf("%s beside the upload folder was touched: %q %v", name, data, err)
		}
	}
	if got := back.got(); len(got) != 0 {
		t.Errorf("the backend got %d requests, want none", len(got))
	}
}

// rawRequest sends a request with the path exactly as given (no
// client-side cleaning or escaping) and returns the status code.
func rawRequest(t testing.TB, p *proxy, method, rawPath string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(p.base, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := method + " " + rawPath + " HTTP/1.1\r\nHost: " + strings.TrimPrefix(p.base, "http://") + "\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n" +
		"Content-Type: application/offset+octet-stream\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello!"
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	var proto string
	var code int
	if _, err := fmtSscan(conn, &proto, &code); err != nil {
		t.Fatalf("%s %s: reading the status line: %v", method, rawPath, err)
	}
	return code
}
