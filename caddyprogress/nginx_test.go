package caddyprogress

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// nginxOptions turns on the nginx report route at /progress.
const nginxOptions = "\t\tnginx_report_path /progress"

// nginxReportGet asks the nginx report route with the given query and
// headers, and returns the response and its exact body.
func (p *proxy) nginxReportGet(t testing.TB, method, query string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, p.base+"/progress"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v // as given: not canonicalized
	}
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatalf("asking the nginx report route: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the nginx report: %v", err)
	}
	return resp, string(body)
}

// nginxReport asks for the report of id in the X-Progress-ID query
// parameter and checks the headers nginx sends with it.
func (p *proxy) nginxReport(t testing.TB, id string) string {
	t.Helper()
	resp, body := p.nginxReportGet(t, http.MethodGet, "?X-Progress-ID="+id, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("nginx report for %s: %d %q", id, resp.StatusCode, body)
	}
	return body
}

func TestNginxReportFollowsAnUploadByteForByte(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, nginxOptions, up.host)

	resp, body := p.nginxReportGet(t, http.MethodGet, "?X-Progress-ID=nginx-1", nil)
	if body != "{ \"state\" : \"starting\" }\r\n" {
		t.Fatalf("unknown ID: %q, want starting", body)
	}
	for field, want := range map[string]string{
		"Content-Type":   "application/json",
		"Expires":        "Thu, 01 Jan 1970 00:00:01 GMT",
		"Cache-Control":  "no-cache",
		"Content-Length": "26",
	} {
		if got := resp.Header.Get(field); got != want {
			t.Errorf("header %s = %q, want %q", field, got, want)
		}
	}

	data := payload(4 << 20)
	paced := &pacedReader{data: data, chunk: 64 << 10, stopAt: 1 << 20, release: make(chan struct{})}
	done := make(chan int, 1)
	go func() {
		resp, _ := p.upload(t, http.MethodPost, "/upload", paced, int64(len(data)), http.Header{"X-Progress-Id": {"nginx-1"}})
		done <- resp.StatusCode
	}()
	p.waitFor(t, "nginx-1", "1 MiB received", func(_ int, s Status) bool { return s.Received == 1<<20 })
	if got := p.nginxReport(t, "nginx-1"); got != "{ \"state\" : \"uploading\", \"received\" : 1048576, \"size\" : 4194304 }\r\n" {
		t.Fatalf("mid-upload: %q", got)
	}

	close(paced.release)
	if code := <-done; code != http.StatusOK {
		t.Fatalf("upload answered %d", code)
	}
	p.waitForStatus(t, "nginx-1", "complete")
	if got := p.nginxReport(t, "nginx-1"); got != "{ \"state\" : \"done\" }\r\n" {
		t.Fatalf("after the upload: %q, want done", got)
	}
	if got, _ := up.get("nginx-1"); got.bytes != int64(len(data)) {
		t.Fatalf("upstream got %d bytes, want %d", got.bytes, len(data))
	}
}

func TestNginxReportIDNamesAreCaseInsensitive(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, nginxOptions, up.host)
	p.upload(t, http.MethodPost, "/", strings.NewReader("hello"), 5, http.Header{"X-Upload-Id": {"any-case"}})
	p.waitForStatus(t, "any-case", "complete")

	for _, tc := range []struct {
		name   string
		query  string
		header http.Header
	}{
		{"lower-case header", "", http.Header{"x-progress-id": {"any-case"}}},
		{"upper-case header", "", http.Header{"X-PROGRESS-ID": {"any-case"}}},
		{"lower-case query", "?x-progress-id=any-case", nil},
		{"mixed-case query after another parameter", "?_=1700000000000&x-Progress-Id=any-case", nil},
	} {
		resp, body := p.nginxReportGet(t, http.MethodGet, tc.query, tc.header)
		if resp.StatusCode != http.StatusOK || body != "{ \"state\" : \"done\" }\r\n" {
			t.Errorf("%s: %d %q, want 200 done", tc.name, resp.StatusCode, body)
		}
	}
}

func TestNginxReportJSONP(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, nginxOptions, up.host)
	p.upload(t, http.MethodPost, "/", strings.NewReader("hello"), 5, http.Header{"X-Upload-Id": {"jsonp"}})
	p.waitForStatus(t, "jsonp", "complete")

	resp, body := p.nginxReportGet(t, http.MethodGet, "?X-Progress-ID=jsonp&callback=jQuery3710_1700.done$", nil)
	if resp.StatusCode != http.StatusOK || body != "jQuery3710_1700.done$({ \"state\" : \"done\" });\r\n" {
		t.Fatalf("JSONP: %d %q", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/javascript" {
		t.Fatalf("JSONP Content-Type = %q, want application/javascript", ct)
	}
	if resp.Header.Get("Expires") != "Thu, 01 Jan 1970 00:00:01 GMT" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("JSONP caching headers: %v", resp.Header)
	}

	_, body = p.nginxReportGet(t, http.MethodGet, "?X-Progress-ID=never-seen&callback=cb", nil)
	if body != "cb({ \"state\" : \"starting\" });\r\n" {
		t.Fatalf("JSONP for an unknown ID: %q", body)
	}
}

func TestNginxReportRefusesUnsafeCallbacks(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, nginxOptions, up.host)
	for _, callback := range []string{
		"alert(1)//",
		"%3Cscript%3E",
		"1up",
		"",
		strings.Repeat("a", 65),
	} {
		resp, body := p.nginxReportGet(t, http.MethodGet, "?X-Progress-ID=x&callback="+callback, nil)
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "application/json" ||
			!strings.HasPrefix(body, `{"error":"JSONP callback name`) {
			t.Errorf("callback %q: %d %s %q, want 400 with a JSON error", callback, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
	// the longest allowed name passes
	if resp, _ := p.nginxReportGet(t, http.MethodGet, "?X-Progress-ID=x&callback="+strings.Repeat("a", 64), nil); resp.StatusCode != http.StatusOK {
		t.Errorf("a 64-character callback answered %d, want 200", resp.StatusCode)
	}
}

func TestNginxReportErrorStates(t *testing.T) {
	up := newUpstream(t)
	up.status = http.StatusInternalServerError
	p := startProxy(t, nginxOptions, up.host)
	p.upload(t, http.MethodPost, "/", strings.NewReader("hello"), 5, http.Header{"X-Upload-Id": {"upstream-500"}})
	p.waitForStatus(t, "upstream-500", "error")
	if got := p.nginxReport(t, "upstream-500"); got != "{ \"state\" : \"error\", \"status\" : 500 }\r\n" {
		t.Fatalf("upstream answered 500: %q", got)
	}

	// the client goes away mid-body: nginx reports 400
	conn, err := net.Dial("tcp", strings.TrimPrefix(p.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(conn)
	fmt.Fprintf(w, "POST /upload HTTP/1.1\r\nHost: %s\r\nX-Progress-ID: dropped\r\nContent-Length: %d\r\n\r\n", conn.RemoteAddr(), 10<<20)
	w.Write(payload(1 << 20))
	w.Flush()
	p.waitFor(t, "dropped", "1 MiB received", func(_ int, s Status) bool { return s.Received == 1<<20 })
	conn.Close()
	p.waitForStatus(t, "dropped", "aborted")
	if got := p.nginxReport(t, "dropped"); got != "{ \"state\" : \"error\", \"status\" : 400 }\r\n" {
		t.Fatalf("aborted upload: %q", got)
	}
}

func TestNginxReportProcessingReadsAsFullyUploaded(t *testing.T) {
	up := newUpstream(t)
	up.delay = 1500 * time.Millisecond
	p := startProxy(t, nginxOptions, up.host)
	data := payload(1 << 20)
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.upload(t, http.MethodPost, "/", strings.NewReader(string(data)), int64(len(data)), http.Header{"X-Upload-Id": {"processing"}})
	}()
	p.waitForStatus(t, "processing", "processing")
	if got := p.nginxReport(t, "processing"); got != "{ \"state\" : \"uploading\", \"received\" : 1048576, \"size\" : 1048576 }\r\n" {
		t.Fatalf("processing: %q", got)
	}
	<-done
}

func TestNginxReportChunkedSizeIsBytesSoFar(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, nginxOptions, up.host)
	data := payload(2 << 20)
	paced := &pacedReader{data: data, chunk: 64 << 10, stopAt: 512 << 10, release: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.upload(t, http.MethodPost, "/", paced, -1, http.Header{"X-Upload-Id": {"chunked"}})
	}()
	p.waitFor(t, "chunked", "512 KiB received", func(_ int, s Status) bool { return s.Received == 512<<10 })
	if got := p.nginxReport(t, "chunked"); got != "{ \"state\" : \"uploading\", \"received\" : 524288, \"size\" : 524288 }\r\n" {
		t.Fatalf("chunked mid-upload: %q", got)
	}
	close(paced.release)
	<-done
	p.waitForStatus(t, "chunked", "complete")
}

func TestNginxReportReservedIDIsStarting(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, nginxOptions, up.host)
	resp, err := p.client.Post(p.base+DefaultStatusPath, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Upload-ID")
	if got := p.nginxReport(t, id); got != "{ \"state\" : \"starting\" }\r\n" {
		t.Fatalf("reserved ID: %q, want starting", got)
	}
}

func TestNginxReportRequestErrors(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, nginxOptions, up.host)
	for _, tc := range []struct {
		name, method, query string
		wantCode            int
		wantBody            string
	}{
		{"no ID", http.MethodGet, "?callback=cb", 400, `{"error":"no upload ID: send it in the X-Progress-ID header or query parameter"}` + "\n"},
		{"invalid ID", http.MethodGet, "?X-Progress-ID=a/b", 400, `{"error":"X-Progress-ID: upload ID has a character that is not allowed at position 2 (allowed: A-Z a-z 0-9 . _ ~ : -)"}` + "\n"},
		{"POST", http.MethodPost, "?X-Progress-ID=x", 405, ""},
	} {
		resp, body := p.nginxReportGet(t, tc.method, tc.query, nil)
		if resp.StatusCode != tc.wantCode || (tc.wantBody != "" && body != tc.wantBody) {
			t.Errorf("%s: %d %q, want %d %q", tc.name, resp.StatusCode, body, tc.wantCode, tc.wantBody)
		}
	}
	// HEAD answers the headers only, as nginx does
	resp, body := p.nginxReportGet(t, http.MethodHead, "?X-Progress-ID=x", nil)
	if resp.StatusCode != http.StatusOK || body != "" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("HEAD: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	// the report route answers by itself, never through the upstream
	if up.requests.Load() != 0 {
		t.Fatalf("the report route reached the upstream %d times", up.requests.Load())
	}
}

func TestNginxReportOverHTTP2WithoutLength(t *testing.T) {
	up := newUpstream(t)
	site := fmt.Sprintf("https://127.0.0.1:%d", testcaddy.FreePort(t))
	testcaddy.Run(t, testcaddy.GlobalOptions+siteBlock(site, nginxOptions, up.host))
	p := &proxy{base: site, client: h2Client()}

	data := payload(2 << 20)
	paced := &pacedReader{data: data, chunk: 64 << 10, stopAt: 768 << 10, release: make(chan struct{})}
	done := make(chan *http.Response, 1)
	go func() {
		resp, _ := p.upload(t, http.MethodPut, "/", paced, -1, http.Header{"X-Progress-Id": {"h2-no-length"}})
		done <- resp
	}()
	p.waitFor(t, "h2-no-length", "768 KiB received", func(_ int, s Status) bool { return s.Received == 768<<10 })
	resp, body := p.nginxReportGet(t, http.MethodGet, "", http.Header{"x-progress-id": {"h2-no-length"}})
	if resp.ProtoMajor != 2 || body != "{ \"state\" : \"uploading\", \"received\" : 786432, \"size\" : 786432 }\r\n" {
		t.Fatalf("HTTP/%d report mid-upload: %q", resp.ProtoMajor, body)
	}
	close(paced.release)
	if resp := <-done; resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
		t.Fatalf("upload answered HTTP/%d %d", resp.ProtoMajor, resp.StatusCode)
	}
	p.waitForStatus(t, "h2-no-length", "complete")
	if got := p.nginxReport(t, "h2-no-length"); got != "{ \"state\" : \"done\" }\r\n" {
		t.Fatalf("after the upload: %q", got)
	}
}

// An upload on another instance gets the report it gets on its own:
// the report is made from the document that instance publishes, in
// every state. A resumable upload paused between requests, or
// delivering, reads "uploading" there too (a second report, for other
// instances' documents, knew only uploading and processing, and said
// error 500 of the others).
func TestNginxReportOfAnotherInstancesUploadIsItsOwn(t *testing.T) {
	tr := newTracker("nginx-shared")
	t.Cleanup(func() { tr.Destruct() })
	for _, st := range []state{progress.StateUploading, progress.StateProcessing, progress.StatePaused, progress.StateDelivering, progress.StateComplete, progress.StateError, progress.StateAborted} {
		u, err := tr.start("report-"+st.String(), 1000, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		u.addReceived(400)
		if st.Final() {
			u.finish(st, 502, "", time.Now())
		} else {
			u.state.Store(int32(st))
		}
		here := nginxReport(record{live: u})
		published, upstream, err := docFromJSON(docJSON(record{live: u}.document(time.Now())))
		if err != nil {
			t.Fatal(err)
		}
		if there := nginxReport(record{doc: published, upstream: upstream}); there != here {
			t.Errorf("%s: another instance reports %s, its own %s", st, there, here)
		}
	}
}
