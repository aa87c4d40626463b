package caddyprogress

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// adminProxy is a running Caddy with its admin endpoint on a free
// loopback port, and upload_progress before reverse_proxy on another.
type adminProxy struct {
	*proxy
	admin string // e.g. http://127.0.0.1:2345
}

// startProxyWithAdmin is startProxy with the admin endpoint on.
func startProxyWithAdmin(t testing.TB, options, upstream string) *adminProxy {
	t.Helper()
	adminAddr := fmt.Sprintf("127.0.0.1:%d", testcaddy.FreePort(t))
	site := fmt.Sprintf("http://127.0.0.1:%d", testcaddy.FreePort(t))
	testcaddy.Run(t, adminCaddyfile(adminAddr, site, options, upstream))
	return &adminProxy{
		proxy: &proxy{base: site, client: &http.Client{Transport: &http.Transport{DisableCompression: true}}},
		admin: "http://" + adminAddr,
	}
}

// adminCaddyfile is the test config with the admin endpoint on adminAddr.
func adminCaddyfile(adminAddr, site, options, upstream string) string {
	return strings.Replace(testcaddy.GlobalOptions, "admin off", "admin "+adminAddr, 1) + siteBlock(site, options, upstream)
}

// reload loads a new config with the same admin endpoint and site. The
// reload closes the old server's idle connections, and a POST sent on
// one just as it closes fails with EOF (Go's client does not retry a
// POST), so the client lets go of its idle connections first.
func (p *adminProxy) reload(t testing.TB, options, upstream string) {
	t.Helper()
	testcaddy.Load(t, adminCaddyfile(strings.TrimPrefix(p.admin, "http://"), p.base, options, upstream))
	p.client.CloseIdleConnections()
}

// adminGet asks the admin endpoint (with Go's client: the admin API
// refuses browser-like requests) and returns the status and body.
func (p *adminProxy) adminGet(t testing.TB, path string) (int, []byte) {
	t.Helper()
	resp, err := p.client.Get(p.admin + path)
	if err != nil {
		t.Fatalf("GET %s on the admin endpoint: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func (p *adminProxy) listing(t testing.TB) adminListing {
	t.Helper()
	code, body := p.adminGet(t, "/upload_progress/")
	if code != http.StatusOK {
		t.Fatalf("admin listing: %d %s", code, body)
	}
	var l adminListing
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatalf("admin listing %s: %v", body, err)
	}
	return l
}

// trackerIn is the tracker named name in the listing l.
func trackerIn(t testing.TB, l adminListing, name string) adminTracker {
	t.Helper()
	for _, tr := range l.Trackers {
		if tr.Name == name {
			return tr
		}
	}
	t.Fatalf("tracker %q is not in the admin listing %+v", name, l)
	return adminTracker{}
}

func TestAdminListsUploadsInFlightOnly(t *testing.T) {
	up := newUpstream(t)
	p := startProxyWithAdmin(t, "\t\ttracker admin-list", up.host)

	p.upload(t, http.MethodPost, "/", strings.NewReader("hello"), 5, http.Header{"X-Upload-Id": {"finished"}})
	p.waitForStatus(t, "finished", "complete")

	data := payload(4 << 20)
	paced := &pacedReader{data: data, chunk: 64 << 10, stopAt: 1 << 20, release: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.upload(t, http.MethodPost, "/", paced, int64(len(data)), http.Header{"X-Upload-Id": {"in-flight"}, "X-Upload-Group": {"listed-group"}})
	}()
	p.waitFor(t, "in-flight", "1 MiB received", func(_ int, s Status) bool { return s.Received == 1<<20 })

	tr := trackerIn(t, p.listing(t), "admin-list")
	if tr.Records != 2 || len(tr.Uploads) != 1 {
		t.Fatalf("tracker admin-list: %+v, want 2 records and 1 upload in flight", tr)
	}
	u := tr.Uploads[0]
	if u.ID != "in-flight" || u.Status != "uploading" || u.Received != 1<<20 || u.Total == nil || *u.Total != 4<<20 || u.StartedAt.IsZero() {
		t.Fatalf("upload in flight listed as %+v", u)
	}
	if u.Group != "listed-group" || u.Files != nil {
		t.Fatalf("upload in flight listed with group %q and files %v, want its group listed-group and no files", u.Group, u.Files)
	}
	if tr.MaxMemory != DefaultMaxMemory || tr.Memory <= 0 || tr.Memory > tr.MaxMemory {
		t.Fatalf("tracker admin-list lists memory %d of %d, want some bytes of the default max_memory %d", tr.Memory, tr.MaxMemory, DefaultMaxMemory)
	}

	// one upload's status, in flight or finished
	for id, want := range map[string]Status{
		"in-flight": {ID: "in-flight", Status: "uploading", Received: 1 << 20},
		"finished":  {ID: "finished", Status: "complete", Received: 5},
	} {
		code, body := p.adminGet(t, "/upload_progress/admin-list/"+id)
		var s Status
		if err := json.Unmarshal(body, &s); err != nil || code != http.StatusOK {
			t.Fatalf("admin status of %s: %d %s (%v)", id, code, body, err)
		}
		if s.ID != want.ID || s.Status != want.Status || s.Received != want.Received {
			t.Fatalf("admin status of %s: %+v, want %+v", id, s, want)
		}
	}

	close(paced.release)
	<-done
	p.waitForStatus(t, "in-flight", "complete")
	if tr := trackerIn(t, p.listing(t), "admin-list"); len(tr.Uploads) != 0 || tr.Records != 2 {
		t.Fatalf("after the upload finished the listing shows %+v, want no upload in flight", tr)
	}
}

func TestAdminUnknownUploadsAndTrackersAre404(t *testing.T) {
	up := newUpstream(t)
	p := startProxyWithAdmin(t, "\t\ttracker admin-404", up.host)
	for _, tc := range []struct {
		path     string
		wantCode int
		wantBody string
	}{
		{"/upload_progress/admin-404/never-seen", 404, `{"id":"never-seen","status":"unknown"}` + "\n"},
		{"/upload_progress/no-such-tracker/x", 404, `"no tracker named \"no-such-tracker\" is in use"`},
		{"/upload_progress/admin-404", 404, "no such route"},
		{"/upload_progress/admin-404/a/b", 404, "no such route"},
	} {
		code, body := p.adminGet(t, tc.path)
		if code != tc.wantCode || !strings.Contains(string(body), tc.wantBody) {
			t.Errorf("GET %s: %d %s, want %d with %s", tc.path, code, body, tc.wantCode, tc.wantBody)
		}
	}
}

func TestAdminListingIsNotOnTheSite(t *testing.T) {
	up := newUpstream(t)
	p := startProxyWithAdmin(t, "\t\ttracker admin-site", up.host)
	resp, err := p.client.Get(p.base + "/upload_progress/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// the site passes the path to its upstream, which answers for itself
	if resp.StatusCode != http.StatusOK || string(body) != `{"bytes":0}` || up.requests.Load() != 1 {
		t.Fatalf("GET /upload_progress/ on the site: %d %s (upstream saw %d requests)", resp.StatusCode, body, up.requests.Load())
	}
	if l := p.listing(t); len(trackerIn(t, l, "admin-site").Uploads) != 0 {
		t.Fatalf("listing: %+v", l)
	}
}
