package clustertest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

const clusterSecret = "a-cluster-test-secret-of-32-bytes"

// tokenFor makes the token of an upload or group (kind) of tracker
// "default" as the README describes it.
func tokenFor(kind, id string) string {
	mac := hmac.New(sha256.New, []byte(clusterSecret))
	for _, field := range []string{"caddy-upload-progress token v1", kind, "default", id} {
		_ = binary.Write(mac, binary.BigEndian, uint32(len(field)))
		mac.Write([]byte(field))
	}
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// send makes one request through the instance and returns its answer's
// status and headers.
func (inst *instance) send(t testing.TB, method, path string, body io.Reader, size int64, header http.Header) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, inst.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = size
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := inst.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", method, path, inst.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// groupWith reads a group's status through inst with a bearer token.
func (inst *instance) groupWith(t testing.TB, group, token string) (int, groupStatus) {
	t.Helper()
	code, _, body := inst.send(t, http.MethodGet, "/upload/status/?group="+group, nil, 0, http.Header{"Authorization": {"Bearer " + token}})
	var g groupStatus
	if err := json.Unmarshal(body, &g); err != nil {
		t.Fatalf("group status on %s: %d %s: %v", inst.name, code, body, err)
	}
	return code, g
}

// Issue 15, findings 4 and 9, across instances: with status_access
// token, a group reserved on B is joined on A and B with its token
// only; a stranger naming it on B is tracked on its own, gets no token
// and fills nothing; a stranger naming the owner's live ID on B gets a
// fresh ID, not the 409 that would tell the ID is in use on A.
func TestGroupTokenRulesAcrossInstances(t *testing.T) {
	a, b, up, _ := twoInstances(t, "\t\tstatus_access token\n\t\ttoken_secret "+clusterSecret+"\n\t\tmax_group_uploads 2")

	code, header, body := b.send(t, http.MethodPost, "/upload/status/?group", nil, 0, nil)
	var res struct{ Group, Token string }
	if err := json.Unmarshal(body, &res); err != nil || code != http.StatusCreated || res.Token != tokenFor("group", res.Group) || header.Get("X-Upload-Group-Token") != res.Token {
		t.Fatalf("group reservation on B: %d %s", code, body)
	}
	owner := http.Header{"X-Upload-Group": {res.Group}, "X-Upload-Group-Token": {res.Token}}

	// the owner's first upload, on A, under an ID of its own shown with its token
	first := payload(2 << 20)
	firstHeader := http.Header{"X-Upload-Id": {"owner-1"}, "X-Upload-Token": {tokenFor("upload", "owner-1")}}
	for k, v := range owner {
		firstHeader[k] = v
	}
	firstDone := a.uploadAsync("", paced(first, 32<<10, 20*time.Millisecond), int64(len(first)), firstHeader)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, g := b.groupWith(t, res.Group, res.Token); code == http.StatusOK && len(g.Uploads) == 1 && g.Status == "uploading" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("B never showed the owner's upload on A in the group")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// strangers on B: the group's name without its token, three times
	// (max_group_uploads is 2), and the owner's live ID
	for range 3 {
		code, header, _ := b.send(t, http.MethodPost, "/upload", strings.NewReader("stranger"), 8, http.Header{"X-Upload-Group": {res.Group}})
		if code != http.StatusOK || header.Get("X-Upload-Group-Token") != "" {
			t.Fatalf("a stranger naming the group on B: %d, group token %q", code, header.Get("X-Upload-Group-Token"))
		}
	}
	code, header, _ = b.send(t, http.MethodPost, "/upload", strings.NewReader("stranger"), 8, http.Header{"X-Upload-Id": {"owner-1"}})
	if code != http.StatusOK || header.Get("X-Upload-Id") == "owner-1" {
		t.Fatalf("a stranger naming the owner's live ID on B: %d under %q; want 200 under a fresh ID", code, header.Get("X-Upload-Id"))
	}

	// the owner's second upload, on B, still joins
	code, header, _ = b.send(t, http.MethodPost, "/upload", strings.NewReader("second"), 6, owner)
	if code != http.StatusOK || header.Get("X-Upload-Group-Token") != res.Token {
		t.Fatalf("the owner's second upload on B: %d, group token %q", code, header.Get("X-Upload-Group-Token"))
	}
	second := header.Get("X-Upload-Id")
	if r := <-firstDone; r.code != http.StatusOK {
		t.Fatalf("the owner's first upload: %+v", r)
	}
	if up.sha("owner-1") != sha256Hex(first) {
		t.Fatal("the owner's first upload arrived altered")
	}

	for _, inst := range []*instance{a, b} {
		deadline := time.Now().Add(10 * time.Second)
		var g groupStatus
		for {
			var code int
			if code, g = inst.groupWith(t, res.Group, res.Token); code == http.StatusOK && g.Status != "uploading" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the group on %s never ended: %+v", inst.name, g)
			}
			time.Sleep(20 * time.Millisecond)
		}
		ids := map[string]bool{}
		for _, u := range g.Uploads {
			ids[u.ID] = true
		}
		if g.Status != "complete" || len(g.Uploads) != 2 || !ids["owner-1"] || !ids[second] || g.Received != int64(len(first)+6) {
			t.Errorf("the group on %s: %+v; want complete with the owner's 2 uploads", inst.name, g)
		}
		if code, _ := inst.groupWith(t, res.Group, "wrong"); code != http.StatusNotFound {
			t.Errorf("the group on %s without its token: %d, want 404", inst.name, code)
		}
	}
}
