package caddyprogress

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// curlBoundary is a boundary in the style curl -F uses.
const curlBoundary = "------------------------a1b2c3d4e5f60718"

// threeFilesTwoFields is the form of the issue: three files of 0 B,
// 1 MiB and 20 MiB and two plain fields, in curl -F order.
func threeFilesTwoFields() []formPart {
	return []formPart{
		{field: "title", content: []byte("holiday photos")},
		{field: "empty", filename: fileName("empty.bin"), content: nil},
		{field: "small", filename: fileName("small.bin"), content: payload(1 << 20)},
		{field: "big", filename: fileName("big.bin"), content: payload(20 << 20)},
		{field: "note", content: []byte("sent with curl -F")},
	}
}

func formHeader(id, boundary string) http.Header {
	return http.Header{
		"X-Upload-Id":  {id},
		"Content-Type": {"multipart/form-data; boundary=" + boundary},
	}
}

// checkFinalFiles checks that files reports every part complete with its
// exact size.
func checkFinalFiles(t *testing.T, files []FileStatus, parts []formPart) {
	t.Helper()
	want := wantFiles(parts)
	for i := range want {
		want[i].Received = int64(len(parts[i].content))
	}
	if !sameFiles(files, want) {
		t.Fatalf("files = %s\nwant    %s", describeFiles(files), describeFiles(want))
	}
}

func TestMultipartUploadReportsEachFile(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "", up.host)
	const id = "form-1"
	parts := threeFilesTwoFields()
	body := buildForm(t, curlBoundary, parts)
	events := p.subscribe(t, id)
	events.next(t, 5*time.Second) // pending

	// poll while uploading
	paced := &pacedReader{data: body, chunk: 256 << 10, pause: 10 * time.Millisecond}
	stop := make(chan struct{})
	var polls []Status
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(15 * time.Millisecond):
			}
			if code, s := p.getStatus(t, id); code == http.StatusOK {
				polls = append(polls, s)
			}
		}
	})
	resp, respBody := p.upload(t, http.MethodPost, "/upload", paced, int64(len(body)), formHeader(id, curlBoundary))
	close(stop)
	wg.Wait()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upload answered %d: %s", resp.StatusCode, respBody)
	}
	if got, _ := up.get(id); got.bytes != int64(len(body)) || got.sha256 != sha256Hex(body) {
		t.Fatalf("upstream got %d bytes with SHA-256 %s, want %d with %s", got.bytes, got.sha256, len(body), sha256Hex(body))
	}

	// every poll: the parts so far, in order, all but the last complete,
	// never more than their size, adding up to no more than received;
	// and nothing ever goes backwards
	var prev []FileStatus
	sawBigInProgress := false
	for n, s := range polls {
		var sum int64
		for i, f := range s.Files {
			if i >= len(parts) || f.Field != parts[i].field {
				t.Fatalf("poll %d: part %d is %q: %s", n, i, f.Field, describeFiles(s.Files))
			}
			size := int64(len(parts[i].content))
			if f.Received > size || (f.Status == partComplete && f.Received != size) {
				t.Fatalf("poll %d: part %d (%d bytes) shows %d %s", n, i, size, f.Received, f.Status)
			}
			if f.Status != partComplete && i != len(s.Files)-1 {
				t.Fatalf("poll %d: part %d is %s while a later part has started: %s", n, i, f.Status, describeFiles(s.Files))
			}
			if i < len(prev) && (f.Received < prev[i].Received || (prev[i].Status == partComplete && f.Status != partComplete)) {
				t.Fatalf("poll %d: part %d went back from %d %s to %d %s", n, i, prev[i].Received, prev[i].Status, f.Received, f.Status)
			}
			if i == 3 && f.Status == partUploading && f.Received > 0 {
				sawBigInProgress = true
			}
			sum += f.Received
		}
		if len(s.Files) < len(prev) {
			t.Fatalf("poll %d: %d parts after %d", n, len(s.Files), len(prev))
		}
		if sum > s.Received {
			t.Fatalf("poll %d: parts add up to %d, more than the %d received", n, sum, s.Received)
		}
		prev = s.Files
	}
	if !sawBigInProgress {
		t.Fatalf("no poll of %d saw the 20 MiB file part-way", len(polls))
	}

	s := p.waitForStatus(t, id, "complete")
	checkFinalFiles(t, s.Files, parts)
	if s.Files[1].Filename == nil || *s.Files[1].Filename != "empty.bin" || s.Files[0].Filename != nil {
		t.Fatalf("file names: %s", describeFiles(s.Files))
	}

	// events carry the files too; the final one all of them complete
	all := events.all(t, 10*time.Second)
	last := all[len(all)-1]
	if last.name != "complete" {
		t.Fatalf("last event %q, want complete", last.name)
	}
	checkFinalFiles(t, last.status(t).Files, parts)
	withFiles := 0
	for _, ev := range all[:len(all)-1] {
		if len(ev.status(t).Files) > 0 {
			withFiles++
		}
	}
	if withFiles < 3 {
		t.Fatalf("%d of %d progress events carry files", withFiles, len(all)-1)
	}
}

// TestCurlFormUpload sends the form with the real curl -F, whose
// boundary, part headers and Expect: 100-continue are its own.
func TestCurlFormUpload(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	up := newUpstream(t)
	p := startProxy(t, "", up.host)
	parts := threeFilesTwoFields()
	dir := t.TempDir()
	args := []string{"-sS", "--fail", "-H", "X-Upload-ID: curl-form"}
	for _, part := range parts {
		if part.filename == nil {
			args = append(args, "-F", part.field+"="+string(part.content))
			continue
		}
		path := filepath.Join(dir, *part.filename)
		if err := os.WriteFile(path, part.content, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-F", part.field+"=@"+path)
	}
	args = append(args, p.base+"/upload")
	if out, err := exec.Command(curl, args...).CombinedOutput(); err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	s := p.waitForStatus(t, "curl-form", "complete")
	checkFinalFiles(t, s.Files, parts)
	got, _ := up.get("curl-form")
	if got.bytes != s.Received || *s.Total != s.Received {
		t.Fatalf("upstream got %d bytes; the status says %d of %v", got.bytes, s.Received, *s.Total)
	}
}

func TestHostileMultipartBodiesAreTrackedAsAWhole(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "", up.host)
	good := buildForm(t, "good-boundary", threeFilesTwoFields()[:3])
	var many []formPart
	for i := range 3000 {
		many = append(many, formPart{field: fmt.Sprint("f", i), filename: fileName("x"), content: []byte("x")})
	}
	hugeHeader := "--hb\r\nContent-Disposition: form-data; name=\"f\"\r\nX-Pad: " + strings.Repeat("p", 20<<10) + "\r\n\r\n" +
		string(payload(1<<20)) + "\r\n--hb--\r\n"
	for _, tc := range []struct {
		name        string
		contentType string
		body        []byte
	}{
		{"no boundary", "multipart/form-data", good},
		{"wrong boundary", "multipart/form-data; boundary=not-this-one", good},
		{"boundary too long", "multipart/form-data; boundary=" + strings.Repeat("b", 71), good},
		{"truncated", "multipart/form-data; boundary=good-boundary", good[:len(good)/2]},
		{"thousands of parts", "multipart/form-data; boundary=many", buildForm(t, "many", many)},
		{"huge part header", "multipart/form-data; boundary=hb", []byte(hugeHeader)},
		{"not multipart at all", "multipart/form-data; boundary=x", payload(2 << 20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := strings.ReplaceAll(tc.name, " ", "-")
			header := http.Header{"X-Upload-Id": {id}, "Content-Type": {tc.contentType}}
			resp, _ := p.upload(t, http.MethodPost, "/upload", &pacedReader{data: tc.body, chunk: 7777}, int64(len(tc.body)), header)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("upload answered %d", resp.StatusCode)
			}
			if got, _ := up.get(id); got.bytes != int64(len(tc.body)) || got.sha256 != sha256Hex(tc.body) {
				t.Fatalf("upstream got %d bytes with SHA-256 %s, want %d with %s", got.bytes, got.sha256, len(tc.body), sha256Hex(tc.body))
			}
			s := p.waitForStatus(t, id, "complete")
			if s.Received != int64(len(tc.body)) || s.Files != nil {
				t.Fatalf("status: received %d of %d, files %s; want all of it and no files", s.Received, len(tc.body), describeFiles(s.Files))
			}
		})
	}
}

func TestMultipartNamesAreCleaned(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "", up.host)
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	w.SetBoundary("nb")
	fw, _ := w.CreateFormFile("photo\xff", "\xfe\xffcat.jpg")
	fw.Write(payload(1000))
	fw, _ = w.CreateFormField(strings.Repeat("ü", 300))
	fw.Write([]byte("v"))
	w.Close()
	body := buf.Bytes()
	p.upload(t, http.MethodPost, "/upload", bytes.NewReader(body), int64(len(body)), formHeader("names", "nb"))
	s := p.waitForStatus(t, "names", "complete")
	if len(s.Files) != 2 || s.Files[0].Field != "photo\uFFFD" || s.Files[0].Filename == nil || *s.Files[0].Filename != "\uFFFDcat.jpg" ||
		s.Files[0].Received != 1000 || s.Files[1].Field != strings.Repeat("ü", 128) || s.Files[1].Received != 1 {
		t.Fatalf("files = %s", describeFiles(s.Files))
	}
	if got, _ := up.get("names"); got.sha256 != sha256Hex(body) {
		t.Fatalf("upstream got the body changed")
	}
}

func TestPlainUploadHasNoFiles(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "", up.host)
	p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {"plain"}, "Content-Type": {"application/octet-stream"}})
	p.waitForStatus(t, "plain", "complete")
	resp, err := p.client.Get(p.base + DefaultStatusPath + "plain")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	if _, ok := raw["files"]; ok {
		t.Fatalf("a plain upload's status has files: %v", raw)
	}
}

// TestMultipartOverHTTP2 sends the form over HTTP/2, whose body arrives
// in DATA frames of other sizes than HTTP/1's reads, and chunked.
func TestMultipartOverHTTP2(t *testing.T) {
	up := newUpstream(t)
	site := fmt.Sprintf("https://127.0.0.1:%d", testcaddy.FreePort(t))
	testcaddy.Run(t, testcaddy.GlobalOptions+siteBlock(site, "", up.host))
	p := &proxy{base: site, client: h2Client()}
	parts := threeFilesTwoFields()
	body := buildForm(t, curlBoundary, parts)
	resp, _ := p.upload(t, http.MethodPost, "/upload", &pacedReader{data: body, chunk: 100_003}, -1, formHeader("form-h2", curlBoundary))
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("upload answered %d over HTTP/%d", resp.StatusCode, resp.ProtoMajor)
	}
	if got, _ := up.get("form-h2"); got.sha256 != sha256Hex(body) {
		t.Fatalf("upstream got the body changed")
	}
	s := p.waitForStatus(t, "form-h2", "complete")
	checkFinalFiles(t, s.Files, parts)
}
