package resumable_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// Issue 15, finding 4, as probed: with status_access token, client_ids
// off and a cookie token, a victim's tus upload in a group, half sent
// with its own credentials for the backend. A stranger naming the group
// (a tus creation, a plain upload) used to get the group's token, list
// the victim's upload and its ID, and complete it with its own bytes,
// delivered with the victim's credentials. Now the stranger is tracked
// on its own, gets no group token, and the victim's upload is delivered
// with the victim's bytes only.
func TestStrangerNamingATusUploadsGroupGetsNoToken(t *testing.T) {
	back := newBackend(t)
	p := startProxy(t, back, "", "status_access token", "token_secret 0123456789abcdef0123456789abcdef",
		"token_cookie upload_token", "client_ids off")

	// the victim reserves its group, then creates its upload in it
	resp, body := p.tusRequest(t, http.MethodPost, "/upload/status/?group", map[string]string{"Tus-Resumable": ""}, nil)
	var group struct{ Group, Token string }
	if err := json.Unmarshal([]byte(body), &group); err != nil || resp.StatusCode != http.StatusCreated || group.Token == "" {
		t.Fatalf("group reservation: %d %s", resp.StatusCode, body)
	}
	victim := map[string]string{"Authorization": "Bearer VICTIM-SECRET", "Cookie": "session=victim"}
	create := map[string]string{"Upload-Length": "10", "X-Upload-Group": group.Group, "X-Upload-Group-Token": group.Token}
	for k, v := range victim {
		create[k] = v
	}
	resp, body = p.tusRequest(t, http.MethodPost, "/files/", create, nil)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("X-Upload-Group-Token") != group.Token {
		t.Fatalf("the victim's creation: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	path := resp.Header.Get("Location")
	path = path[strings.Index(path, "/files/"):]
	uploadToken := resp.Header.Get("X-Upload-Token")
	patch := map[string]string{"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream", "X-Upload-Token": uploadToken}
	if resp, body := p.tusRequest(t, http.MethodPatch, path, patch, []byte("VICTM")); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("the victim's first PATCH: %d %s", resp.StatusCode, body)
	}

	// the stranger: a tus creation and a plain upload naming the group
	resp, body = p.tusRequest(t, http.MethodPost, "/files/", map[string]string{"Upload-Length": "5", "X-Upload-Group": group.Group}, nil)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("X-Upload-Group-Token") != "" {
		t.Fatalf("the stranger's tus creation: %d, group token %q; want 201 without one (%s)",
			resp.StatusCode, resp.Header.Get("X-Upload-Group-Token"), body)
	}
	strangerToken := resp.Header.Get("X-Upload-Token")
	resp, body = p.tusRequest(t, http.MethodPost, "/upload", map[string]string{"Tus-Resumable": "", "X-Upload-Group": group.Group}, []byte("EVIL!"))
	if resp.Header.Get("X-Upload-Group-Token") != "" {
		t.Fatalf("the stranger's plain upload: %d, group token %q (%s)", resp.StatusCode, resp.Header.Get("X-Upload-Group-Token"), body)
	}
	for _, tok := range []string{strangerToken, resp.Header.Get("X-Upload-Token")} {
		resp, body := p.tusRequest(t, http.MethodGet, "/upload/status/?group="+group.Group, map[string]string{"Tus-Resumable": "", "Authorization": "Bearer " + tok}, nil)
		if resp.StatusCode != http.StatusNotFound || strings.Contains(body, "uploads") {
			t.Fatalf("the group read with a stranger's token: %d %s", resp.StatusCode, body)
		}
	}

	// the group, read with its token, holds the victim's upload alone
	resp, body = p.tusRequest(t, http.MethodGet, "/upload/status/?group="+group.Group, map[string]string{"Tus-Resumable": "", "Authorization": "Bearer " + group.Token}, nil)
	var g struct {
		Uploads []struct{ ID string }
	}
	if err := json.Unmarshal([]byte(body), &g); err != nil || resp.StatusCode != http.StatusOK || len(g.Uploads) != 1 || g.Uploads[0].ID != idOf(path) {
		t.Fatalf("the victim's group: %d %s; want the victim's upload alone", resp.StatusCode, body)
	}

	// the victim ends its upload: delivered with its own bytes
	patch["Upload-Offset"] = "5"
	if resp, body := p.tusRequest(t, http.MethodPatch, path, patch, []byte("RIGHT")); resp.StatusCode/100 != 2 {
		t.Fatalf("the victim's last PATCH: %d %s", resp.StatusCode, body)
	}
	var delivered []delivery
	for _, d := range back.got() {
		if d.header.Get("Authorization") == "Bearer VICTIM-SECRET" {
			delivered = append(delivered, d)
		}
	}
	if len(delivered) != 1 || !strings.Contains(string(delivered[0].body), "VICTMRIGHT") || strings.Contains(string(delivered[0].body), "EVIL") {
		t.Fatalf("deliveries with the victim's credentials: %+v", delivered)
	}
}
