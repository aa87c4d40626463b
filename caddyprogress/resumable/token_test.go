package resumable_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testkit"
)

// tokenOptions is status_access token with a fixed secret.
var tokenOptions = []string{"status_access token", "token_secret 0123456789abcdef0123456789abcdef"}

// With status_access token, every tus request on an existing upload
// needs the upload's token: a stranger's HEAD, PATCH and DELETE (tus
// 1.0 or the IETF draft, with no token, a wrong one, or another
// upload's) get exactly the answer for an unknown ID and change
// nothing; the owner goes on with the token as X-Upload-Token or a
// bearer token, and the backend gets the owner's bytes only.
func TestResumableRequestsNeedTheUploadsToken(t *testing.T) {
	back := newBackend(t)
	p := startProxy(t, back, "ietf_draft", tokenOptions...)
	data := payload(10)
	resp, body := p.tusRequest(t, http.MethodPost, "/files/", map[string]string{"Upload-Length": "10"}, nil)
	token := resp.Header.Get("X-Upload-Token")
	if resp.StatusCode != http.StatusCreated || token == "" {
		t.Fatalf("creation: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	path := resp.Header.Get("Location")
	path = path[strings.Index(path, "/files/"):]
	id := idOf(path)
	owner := map[string]string{"X-Upload-Token": token}
	resp, body = p.tusRequest(t, http.MethodPatch, path, map[string]string{"X-Upload-Token": token,
		"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}, data[:5])
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("the owner's first PATCH: %d %s", resp.StatusCode, body)
	}
	other, _ := p.tusRequest(t, http.MethodPost, "/files/", map[string]string{"Upload-Length": "10"}, nil)
	otherToken := other.Header.Get("X-Upload-Token")

	// what an unknown ID gets, with this upload's ID in place of the other
	const unknownID = "0123456789abcdef0123456789abcdef"
	unknown := func(method string) (int, string) {
		resp, body := p.tusRequest(t, method, "/files/"+unknownID, map[string]string{"Upload-Offset": "5",
			"Content-Type": "application/offset+octet-stream"}, []byte("EVIL!"))
		return resp.StatusCode, strings.ReplaceAll(body, unknownID, id)
	}
	for _, stranger := range []struct {
		name   string
		header map[string]string
	}{
		{"no token", nil},
		{"a wrong token", map[string]string{"X-Upload-Token": token[:len(token)-2] + "AA"}},
		{"another upload's token", map[string]string{"X-Upload-Token": otherToken}},
		{"another upload's token as a bearer token", map[string]string{"Authorization": "Bearer " + otherToken}},
		{"the IETF draft without a token", map[string]string{"Tus-Resumable": "", "Upload-Draft-Interop-Version": "6", "Upload-Complete": "?1"}},
	} {
		for _, method := range []string{http.MethodHead, http.MethodPatch, http.MethodDelete} {
			header := map[string]string{"Upload-Offset": "5", "Content-Type": "application/offset+octet-stream"}
			for k, v := range stranger.header {
				header[k] = v
			}
			resp, body := p.tusRequest(t, method, path, header, []byte("EVIL!"))
			wantCode, wantBody := unknown(method)
			if resp.StatusCode != wantCode || body != wantBody || resp.StatusCode != http.StatusNotFound {
				t.Errorf("%s, %s: %d %q; want what an unknown ID gets: %d %q", stranger.name, method, resp.StatusCode, body, wantCode, wantBody)
			}
		}
	}

	resp, _ = p.tusRequest(t, http.MethodHead, path, owner, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Upload-Offset") != "5" {
		t.Fatalf("the owner's HEAD after the strangers: %d, Upload-Offset %q; want 200 and 5", resp.StatusCode, resp.Header.Get("Upload-Offset"))
	}
	resp, body = p.tusRequest(t, http.MethodPatch, path, map[string]string{"Authorization": "Bearer " + token,
		"Upload-Offset": "5", "Content-Type": "application/offset+octet-stream"}, data[5:])
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("the owner's last PATCH with a bearer token: %d %s, want the backend's 201", resp.StatusCode, body)
	}
	assertDeliveredOnce(t, back, data)
}

// tus-js-client with status_access token: sending the creation's
// X-Upload-Token through its headers option (as the README shows), it
// uploads in chunks, pauses and resumes; without it, its first PATCH
// gets 404 and it gives up.
func TestTusJSClientSendsTheUploadsToken(t *testing.T) {
	needNode(t)
	back := newBackend(t)
	p := startProxy(t, back, "", tokenOptions...)
	file, data := writePayload(t, 16<<20)

	c := runNode(t, "tus-upload.mjs", p.base+"/files/", file, tusOptions(t, map[string]any{
		"sendToken": true, "chunkSize": 4 << 20, "pauseAt": 8 << 20}))
	c.await(t, "created", 10*time.Second)
	c.await(t, "paused", 30*time.Second)
	c.send(t, "resume")
	assertSuccessAnswer(t, c.await(t, "success", 60*time.Second), data)
	assertDeliveredOnce(t, back, data)

	without := runNode(t, "tus-upload.mjs", p.base+"/files/", file, tusOptions(t, map[string]any{"chunkSize": 4 << 20}))
	if ev := without.await(t, "error", 30*time.Second); ev["status"] != float64(http.StatusNotFound) {
		t.Fatalf("tus-js-client without the token: %v, want an error with 404", ev)
	}
	if got := back.got(); len(got) != 1 {
		t.Fatalf("the backend got %d deliveries, want 1", len(got))
	}
}

// Uppy (@uppy/core with @uppy/tus) with status_access token: each file
// sends its own token through the headers option (the README's
// snippet), in chunks; both files are delivered.
func TestUppySendsEachUploadsToken(t *testing.T) {
	needNode(t)
	back := newBackend(t)
	p := startProxy(t, back, "", tokenOptions...)
	var files []string
	sums := map[string]bool{}
	for i, size := range []int{3 << 20, 100 << 10} {
		path := filepath.Join(t.TempDir(), fmt.Sprintf("file%d.bin", i))
		data := testkit.Payload(uint64(i+1), size)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, path)
		sums[sha256Hex(data)] = true
	}
	c := runNode(t, "uppy-token.mjs", append([]string{p.base + "/files/", fmt.Sprint(1 << 20)}, files...)...)
	ev := c.await(t, "done", 60*time.Second)
	if ok, _ := ev["successful"].([]any); len(ok) != 2 {
		t.Fatalf("Uppy said %v", ev)
	}
	got := back.got()
	if len(got) != 2 || !sums[got[0].sha256] || !sums[got[1].sha256] || got[0].sha256 == got[1].sha256 {
		t.Fatalf("the backend got %d deliveries, want both files once", len(got))
	}
}
