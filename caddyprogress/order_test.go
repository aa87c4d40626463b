package caddyprogress

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// The directive order trap: handle is ordered before upload_progress, so
// a site-level upload_progress never sees the requests a handle block
// takes. Uploads go through untracked and the status route reaches the
// backend, silently.
func TestDirectiveOrderTrapAtSiteLevel(t *testing.T) {
	up := newUpstream(t)
	site := fmt.Sprintf("http://127.0.0.1:%d", testcaddy.FreePort(t))
	testcaddy.Run(t, testcaddy.GlobalOptions+fmt.Sprintf(`%s {
	upload_progress
	handle /upload* {
		reverse_proxy %s
	}
}
`, site, up.host))
	p := &proxy{base: site, client: &http.Client{}}
	resp, _ := p.upload(t, http.MethodPost, "/upload", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {"trap-1"}})
	if resp.StatusCode != 200 || resp.Header.Get("X-Upload-ID") != "" {
		t.Fatalf("upload: %d, X-Upload-ID %q; the trap would proxy it untracked", resp.StatusCode, resp.Header.Get("X-Upload-ID"))
	}
	before := up.requests.Load()
	if resp, body := p.getWith(t, DefaultStatusPath+"trap-1", nil); body != `{"bytes":0}` || up.requests.Load() != before+1 {
		t.Fatalf("status route: %d %q; the trap sends it to the backend", resp.StatusCode, body)
	}
}

// The working forms: upload_progress inside the handle block, or the
// global option "order upload_progress before handle".
func TestDirectiveOrderWorkingForms(t *testing.T) {
	up := newUpstream(t)
	for name, config := range map[string]string{
		"inside handle": testcaddy.GlobalOptions + `%[1]s {
	handle /upload* {
		upload_progress
		reverse_proxy %[2]s
	}
	handle {
		respond "the rest of the site"
	}
}
`,
		"order before handle": strings.Replace(testcaddy.GlobalOptions, "{\n", "{\n\torder upload_progress before handle\n", 1) + `%[1]s {
	upload_progress
	handle /upload* {
		reverse_proxy %[2]s
	}
	handle {
		respond "the rest of the site"
	}
}
`,
	} {
		t.Run(name, func(t *testing.T) {
			site := fmt.Sprintf("http://127.0.0.1:%d", testcaddy.FreePort(t))
			testcaddy.Run(t, fmt.Sprintf(config, site, up.host))
			p := &proxy{base: site, client: &http.Client{}}
			id := "working-" + strings.ReplaceAll(name, " ", "-")
			data := payload(64 << 10)
			resp, _ := p.upload(t, http.MethodPost, "/upload", strings.NewReader(string(data)), int64(len(data)), http.Header{"X-Upload-Id": {id}})
			if resp.StatusCode != 200 || resp.Header.Get("X-Upload-ID") != id {
				t.Fatalf("upload: %d, X-Upload-ID %q; want it tracked", resp.StatusCode, resp.Header.Get("X-Upload-ID"))
			}
			if got, _ := up.get(id); got.sha256 != sha256Hex(data) {
				t.Fatal("upload arrived altered")
			}
			s := p.waitForStatus(t, id, "complete")
			if s.Received != int64(len(data)) {
				t.Fatalf("status %+v", s)
			}
			if _, body := p.getWith(t, "/", nil); body != "the rest of the site" {
				t.Fatalf("the rest of the site answers %q", body)
			}
		})
	}
}
