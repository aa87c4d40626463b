package resumable_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// twoSites is the config of two sites (on two ports), each with a
// resumable block (its options) in front of its own backend.
func twoSites(baseX, baseY, optionsX, optionsY, backX, backY string) string {
	site := func(base, options, back string) string {
		return fmt.Sprintf(`%s {
	upload_progress {
		resumable /files/ {
			deliver_to /upload
			%s
		}
	}
	reverse_proxy %s
}
`, base, options, back)
	}
	return globalOptions + site(baseX, optionsX, backX) + site(baseY, optionsY, backY)
}

// validate adapts and validates a Caddyfile, without running it.
func validate(t testing.TB, caddyfile string) error {
	t.Helper()
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatal(err)
	}
	var config caddy.Config
	if err := json.Unmarshal(adapted, &config); err != nil {
		t.Fatal(err)
	}
	return caddy.Validate(&config)
}

// Two sites share one dir (named in both, with the same settings).
// Site X's backend is down when its upload is complete; requests to
// site Y come meanwhile. X's retries go only through X's route: Y's
// backend never gets X's upload (nor its Authorization), and once X's
// backend is back, X's upload reaches it. Y cannot see, nor remove,
// X's upload either.
func TestSitesSharingADirDeliverOnlyThroughTheirOwnRoute(t *testing.T) {
	backX, backY := newBackend(t), newBackend(t)
	backX.stop()
	dir := filepath.Join(t.TempDir(), "uploads")
	baseX := fmt.Sprintf("http://127.0.0.1:%d", testcaddy.FreePort(t))
	baseY := fmt.Sprintf("http://127.0.0.1:%d", testcaddy.FreePort(t))
	options := fmt.Sprintf("dir %s\n\t\t\tdeliver_retries 4", dir)
	testcaddy.Run(t, twoSites(baseX, baseY, options, options, backX.addr, backY.addr))
	x := &proxy{base: baseX, dir: dir, client: &http.Client{}}
	y := &proxy{base: baseY, dir: dir, client: &http.Client{}}

	data := payload(1 << 20)
	resp, body := x.tusRequest(t, http.MethodPost, "/files/", map[string]string{
		"Upload-Length": fmt.Sprint(len(data)), "Authorization": "Bearer X-SECRET"}, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("creation on X: %d %s", resp.StatusCode, body)
	}
	path := "/files/" + idOf(resp.Header.Get("Location"))
	id := idOf(path)
	resp, body = x.patch(t, path, 0, data)
	assertRetryLater(t, "final PATCH on X, its backend down", resp, body)

	// Y's requests come while X's delivery waits to retry
	other := y.create(t, 10, "")
	if resp, _ := y.tusRequest(t, http.MethodHead, other, nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD of Y's own upload: %d", resp.StatusCode)
	}
	x.waitStatus(t, id, "a retry", func(s caddyprogress.Status) bool { return s.Resumable != nil && s.Resumable.Attempts >= 2 })
	y.create(t, 10, "") // and more of them

	backX.start(t)
	s := x.waitStatus(t, id, "complete", func(s caddyprogress.Status) bool { return s.Status == "complete" })
	if s.Resumable.Delivery != "delivered" {
		t.Fatalf("X's upload: %+v %+v", s, s.Resumable)
	}
	if got := backY.got(); len(got) != 0 {
		t.Fatalf("Y's backend got %d deliveries (Authorization %q), want none", len(got), got[0].header.Get("Authorization"))
	}
	if d := assertDeliveredOnce(t, backX, data); d.header.Get("Authorization") != "Bearer X-SECRET" {
		t.Fatalf("X's delivery had Authorization %q", d.header.Get("Authorization"))
	}
	for _, method := range []string{http.MethodHead, http.MethodPatch, http.MethodDelete} {
		if resp, _ := y.tusRequest(t, method, path, nil, nil); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s of X's upload through Y: %d, want 404", method, resp.StatusCode)
		}
	}
	if resp, _ := x.tusRequest(t, http.MethodHead, path, nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD of X's upload through X: %d, want 200", resp.StatusCode)
	}
}

// Two handlers that did not name a dir would share the tracker's
// default folder: refused at load, saying so.
func TestDefaultFolderIsNotShared(t *testing.T) {
	err := validate(t, twoSites("http://127.0.0.1:1", "http://127.0.0.1:2", "", "", "127.0.0.1:3", "127.0.0.1:4"))
	if err == nil || !strings.Contains(err.Error(), "default upload folder") {
		t.Fatalf("two handlers on the default folder: %v, want an error about the default upload folder", err)
	}
	// one dir named, the other default: each has its own folder
	dir := filepath.Join(t.TempDir(), "x")
	if err := validate(t, twoSites("http://127.0.0.1:1", "http://127.0.0.1:2", "dir "+dir, "", "127.0.0.1:3", "127.0.0.1:4")); err != nil {
		t.Fatalf("one named dir and one default: %v", err)
	}
}

// Two resumable blocks on one dir with different settings: refused at
// load, naming the setting.
func TestSharedDirWithDifferentSettingsIsRefused(t *testing.T) {
	dir := "dir " + filepath.Join(t.TempDir(), "uploads")
	for _, c := range []struct{ x, y, setting string }{
		{"max_size 1MiB", "max_size 2MiB", "max_size"},
		{"", "deliver_retries 1", "deliver_retries"},
		{"deliver_as multipart a", "deliver_as multipart b", "deliver_as multipart <field>"},
		{"expire 1h", "", "expire"},
	} {
		err := validate(t, twoSites("http://127.0.0.1:1", "http://127.0.0.1:2", dir+"\n"+c.x, dir+"\n"+c.y, "127.0.0.1:3", "127.0.0.1:4"))
		if err == nil || !strings.Contains(err.Error(), "differ in "+c.setting+" (") {
			t.Fatalf("%q and %q on one dir: %v, want an error naming %s", c.x, c.y, err, c.setting)
		}
	}
	if err := validate(t, twoSites("http://127.0.0.1:1", "http://127.0.0.1:2", dir+"\nmax_size 1MiB", dir+"\nmax_size 1MiB", "127.0.0.1:3", "127.0.0.1:4")); err != nil {
		t.Fatalf("the same settings on one dir: %v", err)
	}
}
