package webtest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/chromedp/chromedp"
)

// webtestSecret is tokenSite's token_secret.
const webtestSecret = "a-webtest-secret-of-32-bytes-xx"

// groupTokenFor makes a group's token as the README describes it:
// HMAC-SHA256(secret, the length-prefixed fields "caddy-upload-progress
// token v1", "group", tracker, ID), in unpadded URL-safe base64.
func groupTokenFor(group string) string {
	mac := hmac.New(sha256.New, []byte(webtestSecret))
	for _, field := range []string{"caddy-upload-progress token v1", "group", "default", group} {
		_ = binary.Write(mac, binary.BigEndian, uint32(len(field)))
		mac.Write([]byte(field))
	}
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// readGroup reads a group's status, with its token when token is set.
func (s *site) readGroup(t *testing.T, group, token string) (int, groupStatus) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.base+"/upload/status/?group="+group, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var g groupStatus
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil {
		t.Fatalf("group status: %d: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, g
}

type groupStatus struct {
	Group    string `json:"group"`
	Status   string `json:"status"`
	Received int64  `json:"received"`
	Uploads  []struct {
		ID string `json:"id"`
	} `json:"uploads"`
}

// pageGroups reads each file's upload ID and group ID from the page.
const pageGroups = `Array.from(document.querySelectorAll(".upload"), (li) => [li.dataset.id ?? "", li.dataset.group ?? ""])`

// TestDemoPageReservesOneGroupPerBatch: with status_access token, the
// files picked at once (two uploading at a time) are one group: the
// page reserves it and every upload shows its token, so all of them
// are members, plain and resumable. Without the token (the old page,
// a group name of its own) each would be tracked on its own.
func TestDemoPageReservesOneGroupPerBatch(t *testing.T) {
	s := startSite(t, fmt.Sprintf("%s\n\t\tresumable /files/ {\n\t\t\tdir %q\n\t\t\tdeliver_to /upload\n\t\t}", tokenSite, t.TempDir()))
	for _, mode := range []string{"plain", "resumable"} {
		t.Run(mode, func(t *testing.T) {
			ctx := newTab(t)
			var paths []string
			var size int64
			for i, n := range []int{1 << 20, 2 << 20, 512 << 10} {
				path, _ := writePayload(t, fmt.Sprintf("%s-%d.bin", mode, i), n)
				paths = append(paths, path)
				size += int64(n)
			}
			url := s.base + "/"
			if mode == "resumable" {
				url += "?resumable=on"
			}
			pickFiles(t, ctx, url, paths...)
			waitSettled(t, ctx)
			uploads, err := chromedp.Run(ctx, chromedp.Evaluate[[]pageUpload](readUploads))
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range uploads {
				if u.State != "done" {
					t.Fatalf("%s: %s (%s); want done", u.Name, u.State, u.Error)
				}
			}
			ids, err := chromedp.Run(ctx, chromedp.Evaluate[[][2]string](pageGroups))
			if err != nil {
				t.Fatal(err)
			}
			group := ids[0][1]
			want := map[string]bool{}
			for _, pair := range ids {
				if pair[1] != group || len(group) != 22 {
					t.Fatalf("the page's groups %v; want one reserved group (22 characters) for the batch", ids)
				}
				want[pair[0]] = true
			}
			if code, _ := s.readGroup(t, group, ""); code != http.StatusNotFound {
				t.Fatalf("the group without its token: %d, want 404", code)
			}
			code, g := s.readGroup(t, group, groupTokenFor(group))
			got := map[string]bool{}
			for _, u := range g.Uploads {
				got[u.ID] = true
			}
			if code != http.StatusOK || g.Status != "complete" || g.Received != size || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("the group with its token: %d %+v; want complete, %d bytes, members %v", code, g, size, want)
			}
		})
	}
}
