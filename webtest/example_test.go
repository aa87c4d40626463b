package webtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// startExample runs Caddyfile.example itself, on fresh ports and with the
// web/ folder by its absolute path, until the test ends.
func startExample(t *testing.T) *site {
	t.Helper()
	example, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	port, backendPort := testcaddy.FreePort(t), testcaddy.FreePort(t)
	caddyfile := string(example)
	for _, r := range []struct{ old, new string }{
		{"reverse_proxy @upload 127.0.0.1:9000", fmt.Sprintf("reverse_proxy @upload 127.0.0.1:%d", backendPort)},
		{":9000 {", fmt.Sprintf("http://127.0.0.1:%d {", backendPort)},
		{":8080 {", fmt.Sprintf("http://127.0.0.1:%d {", port)},
		{"root * web", fmt.Sprintf("root * %q", webDir(t))},
	} {
		if !strings.Contains(caddyfile, r.old) {
			t.Fatalf("Caddyfile.example no longer has %q; update this test", r.old)
		}
		caddyfile = strings.Replace(caddyfile, r.old, r.new, 1)
	}
	testcaddy.Run(t, testcaddy.GlobalOptions+caddyfile)
	return &site{base: fmt.Sprintf("http://127.0.0.1:%d", port)}
}

// get fetches a URL and returns the response and its body.
func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// TestExampleServesThePageAndTheClient checks that Caddyfile.example
// serves the demo page at / and the browser client beside it.
func TestExampleServesThePageAndTheClient(t *testing.T) {
	s := startExample(t)
	for _, c := range []struct{ path, contentType, contains string }{
		{"/", "text/html; charset=utf-8", `<script type="module" src="demo.js"></script>`},
		{"/upload-progress.js", "text/javascript; charset=utf-8", "export async function uploadWithProgress("},
		{"/demo.js", "text/javascript; charset=utf-8", `from "./upload-progress.js"`},
		{"/demo.css", "text/css; charset=utf-8", ".bar {"},
	} {
		resp, body := get(t, s.base+c.path)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d; want 200", c.path, resp.StatusCode)
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != c.contentType {
			t.Errorf("GET %s: Content-Type %q; want %q", c.path, got, c.contentType)
		}
		if !strings.Contains(body, c.contains) {
			t.Errorf("GET %s: the body lacks %q", c.path, c.contains)
		}
	}
}

// TestExampleProxiesUploadsToTheBackend checks that Caddyfile.example
// tracks an upload to /upload, at its rate_limit of 10 MiB/s, and that
// the demo backend answers with its SHA-256.
func TestExampleProxiesUploadsToTheBackend(t *testing.T) {
	s := startExample(t)
	path, wantSHA := writePayload(t, "one-mib.bin", 1<<20)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, s.base+"/upload", bytes.NewReader(data))
	req.Header.Set("X-Upload-ID", "example-upload-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer struct {
		Bytes    int64  `json:"bytes"`
		SHA256   string `json:"sha256"`
		UploadID string `json:"upload_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		t.Fatalf("decoding the backend's answer: %v", err)
	}
	if resp.StatusCode != http.StatusOK || answer.Bytes != 1<<20 || answer.SHA256 != wantSHA || answer.UploadID != "example-upload-1" {
		t.Errorf("POST /upload: %d %+v; want 200, %d bytes, sha256 %s, upload_id example-upload-1", resp.StatusCode, answer, 1<<20, wantSHA)
	}

	st := s.status(t, "example-upload-1")
	if st.Status != "complete" || st.Received != 1<<20 || st.RateLimit == nil || *st.RateLimit != 10<<20 {
		t.Errorf("status: %s, received %d, rate_limit %v; want complete, %d, %d", st.Status, st.Received, st.RateLimit, 1<<20, 10<<20)
	}
}
