package resumable_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
)

// assertNoSecret checks the upload's record on disk no longer holds the
// creation's credentials, nor the backend's cookie.
func assertNoSecret(t testing.TB, dir, id string, secrets ...string) {
	t.Helper()
	raw, err := os.ReadFile(recordFile(dir, id))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range append(secrets, "Set-Cookie") {
		if bytes.Contains(raw, []byte(s)) {
			t.Errorf("the record of a final delivery still holds %q: %s", s, raw)
		}
	}
	var rec map[string]any
	if err := json.Unmarshal(raw, &rec); err != nil || rec["header"] != nil {
		t.Errorf("the record of a final delivery still has the creation's headers (%v): %s", err, raw)
	}
	if fi, err := os.Stat(recordFile(dir, id)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the record's permissions: %v (%v), want 0600", fi.Mode().Perm(), err)
	}
}

func recordFile(dir, id string) string { return dir + "/" + id + ".delivery" }

// After delivery, the backend's stored answer goes only to a request
// with the creation's credentials, never with Set-Cookie, and only to an
// empty PATCH at the upload's length: a PATCH with bytes gets 409. The
// record keeps no credential once the delivery is final.
func TestStoredAnswerOnlyForTheCreator(t *testing.T) {
	back := newScriptedBackend(t)
	p := startProxy(t, back.backend, "")
	data := payload(1000)
	creds := map[string]string{"Authorization": "Bearer VICTIM-SECRET", "Cookie": "app_session=VICTIM-COOKIE"}
	resp, body := p.tusRequest(t, http.MethodPost, "/files/", map[string]string{"Upload-Length": "1000",
		"Authorization": creds["Authorization"], "Cookie": creds["Cookie"]}, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("creation: %d %s", resp.StatusCode, body)
	}
	path := "/files/" + idOf(resp.Header.Get("Location"))
	id := idOf(path)
	resp, body = p.patch(t, path, 0, data)
	if resp.StatusCode != http.StatusCreated || !strings.Contains(body, sha256Hex(data)) {
		t.Fatalf("final PATCH: %d %s", resp.StatusCode, body)
	}
	p.waitStatus(t, id, "complete", func(s caddyprogress.Status) bool { return s.Status == "complete" })
	assertNoSecret(t, p.dir, id, "VICTIM-SECRET", "VICTIM-COOKIE", "backend_session")

	empty := func(extra map[string]string) (*http.Response, string) {
		h := map[string]string{"Upload-Offset": "1000", "Content-Type": "application/offset+octet-stream"}
		for k, v := range extra {
			h[k] = v
		}
		return p.tusRequest(t, http.MethodPatch, path, h, nil)
	}
	for _, stranger := range []map[string]string{
		nil,
		{"Authorization": "Bearer SOMEONE-ELSE"},
		{"Cookie": "app_session=other"},
	} {
		resp, body := empty(stranger)
		if resp.StatusCode != http.StatusForbidden || strings.Contains(body, sha256Hex(data)) || resp.Header.Get("Set-Cookie") != "" {
			t.Fatalf("a stranger's empty PATCH (%v): %d %v %s, want 403 without the answer", stranger, resp.StatusCode, resp.Header, body)
		}
	}
	for _, creator := range []map[string]string{
		{"Authorization": creds["Authorization"]},
		{"Cookie": creds["Cookie"]},
	} {
		resp, body := empty(creator)
		if resp.StatusCode != http.StatusCreated || !strings.Contains(body, sha256Hex(data)) || resp.Header.Get("Set-Cookie") != "" {
			t.Fatalf("the creator's empty PATCH (%v): %d %v %s, want the backend's answer without Set-Cookie", creator, resp.StatusCode, resp.Header, body)
		}
	}
	resp, body = p.tusRequest(t, http.MethodPatch, path, map[string]string{"Upload-Offset": "0",
		"Content-Type": "application/offset+octet-stream", "Authorization": creds["Authorization"]}, []byte("EVIL!"))
	if resp.StatusCode != http.StatusConflict || strings.Contains(body, sha256Hex(data)) {
		t.Fatalf("a PATCH with bytes after delivery: %d %s, want 409", resp.StatusCode, body)
	}
}

// With status_access token, the upload's token proves the creator: the
// stored answer is given again to a request with it, and to no other.
func TestStoredAnswerForTheUploadsToken(t *testing.T) {
	back := newScriptedBackend(t)
	p := startProxy(t, back.backend, "", "status_access token", "token_secret 0123456789abcdef0123456789abcdef")
	data := payload(100)
	resp, body := p.tusRequest(t, http.MethodPost, "/files/", map[string]string{"Upload-Length": "100"}, nil)
	token := resp.Header.Get("X-Upload-Token")
	if resp.StatusCode != http.StatusCreated || token == "" {
		t.Fatalf("creation: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	path := "/files/" + idOf(resp.Header.Get("Location"))
	bearer := "Bearer " + token
	resp, body = p.tusRequest(t, http.MethodPatch, path, map[string]string{"Upload-Offset": "0",
		"Content-Type": "application/offset+octet-stream", "Authorization": bearer}, data)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("final PATCH: %d %s", resp.StatusCode, body)
	}
	for _, auth := range []string{"", "Bearer wrong"} {
		resp, body := p.tusRequest(t, http.MethodPatch, path, map[string]string{"Upload-Offset": "100",
			"Content-Type": "application/offset+octet-stream", "Authorization": auth}, nil)
		if resp.StatusCode < 400 || strings.Contains(body, sha256Hex(data)) {
			t.Fatalf("an empty PATCH with Authorization %q: %d %s, want a refusal without the answer", auth, resp.StatusCode, body)
		}
	}
	resp, body = p.tusRequest(t, http.MethodPatch, path, map[string]string{"Upload-Offset": "100",
		"Content-Type": "application/offset+octet-stream", "Authorization": bearer}, nil)
	if resp.StatusCode != http.StatusCreated || !strings.Contains(body, sha256Hex(data)) {
		t.Fatalf("an empty PATCH with the token: %d %s, want the backend's answer", resp.StatusCode, body)
	}
}

// Three PATCHes at offset 0 with different bodies, at once: whatever
// each gets, a success answer always says its own bytes were delivered,
// so two of them never get the answer to the third's.
func TestConcurrentPatchesGetNoSuccessForBytesNotStored(t *testing.T) {
	back := newScriptedBackend(t)
	p := startProxy(t, back.backend, "")
	const size = 1 << 20
	for round := range 3 {
		path := p.create(t, size, "")
		type result struct {
			code int
			body string
			sent string // the sha256 of the bytes sent
		}
		results := make([]result, 3)
		var wg sync.WaitGroup
		for i := range 3 {
			wg.Go(func() {
				data := bytes.Repeat([]byte{byte('a' + i)}, size)
				resp, body := p.patch(t, path, 0, data)
				results[i] = result{resp.StatusCode, body, sha256Hex(data)}
			})
		}
		wg.Wait()
		successes := 0
		for i, r := range results {
			if r.code >= 300 {
				continue
			}
			successes++
			var answer struct {
				SHA256 string `json:"sha256"`
			}
			if r.code != http.StatusCreated || json.Unmarshal([]byte(r.body), &answer) != nil || answer.SHA256 != r.sent {
				t.Fatalf("round %d: PATCH %d got %d %s, but its bytes have sha256 %s", round, i, r.code, r.body, r.sent)
			}
		}
		if successes > 1 {
			t.Fatalf("round %d: %d PATCHes were told of success: %+v", round, successes, results)
		}
	}
	if got := back.got(); len(got) > 3 {
		t.Fatalf("the backend got %d deliveries for 3 uploads", len(got))
	}
}
