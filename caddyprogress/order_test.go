package caddyprogress

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// orderTrapWarning is the start of the warning of ordercheck.go.
const orderTrapWarning = "a handle or route block before upload_progress may take its requests"

// warningsTo returns testcaddy's global options with warnings logged to
// a file, and that file's path.
func warningsTo(t *testing.T) (globalOptions, logFile string) {
	logFile = filepath.Join(t.TempDir(), "caddy.log")
	globalOptions = strings.Replace(testcaddy.GlobalOptions, "level ERROR", "output file "+logFile+"\n\t\tlevel WARN", 1)
	if globalOptions == testcaddy.GlobalOptions {
		t.Fatal("testcaddy.GlobalOptions no longer sets the log level")
	}
	return globalOptions, logFile
}

func logged(t *testing.T, logFile string) string {
	t.Helper()
	b, err := os.ReadFile(logFile)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// The directive order trap: handle is ordered before upload_progress, so
// a site-level upload_progress never sees the requests a handle block
// takes. Uploads go through untracked and the status route reaches the
// backend; the handler warns once the config runs.
func TestDirectiveOrderTrapAtSiteLevel(t *testing.T) {
	up := newUpstream(t)
	site := fmt.Sprintf("http://127.0.0.1:%d", testcaddy.FreePort(t))
	globalOptions, logFile := warningsTo(t)
	testcaddy.Run(t, globalOptions+fmt.Sprintf(`%s {
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
	if log := logged(t, logFile); !strings.Contains(log, orderTrapWarning) || !strings.Contains(log, `"request":"GET /upload/status/probe"`) {
		t.Fatalf("no warning about the trap in the log:\n%s", log)
	}
}

// The working forms: upload_progress inside the handle block, or the
// global option "order upload_progress before handle".
func TestDirectiveOrderWorkingForms(t *testing.T) {
	up := newUpstream(t)
	for name, config := range map[string]string{
		"inside handle": `%[1]s {
	handle /upload* {
		upload_progress
		reverse_proxy %[2]s
	}
	handle {
		respond "the rest of the site"
	}
}
`,
		"order before handle": `%[1]s {
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
			globalOptions, logFile := warningsTo(t)
			if name == "order before handle" {
				globalOptions = strings.Replace(globalOptions, "{\n", "{\n\torder upload_progress before handle\n", 1)
			}
			testcaddy.Run(t, globalOptions+fmt.Sprintf(config, site, up.host))
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
			if log := logged(t, logFile); strings.Contains(log, orderTrapWarning) {
				t.Fatalf("a working form was warned about:\n%s", log)
			}
		})
	}
}
