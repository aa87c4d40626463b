package resumable_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/tests3"
)

// The uploads in a bucket (s3): Caddy in this process, tusd's S3 store
// against a real S3 server on loopback (Versity's S3 gateway, package
// tests3).

// s3Bucket is the bucket of these tests.
const s3Bucket = "uploads"

// s3Block is the s3 setting of the resumable block, on the gateway gw.
func s3Block(gw *tests3.Server, url string) string {
	return fmt.Sprintf("s3 %s {\n\t\t\t\tendpoint %s\n\t\t\t\tpath_style\n\t\t\t}", url, gw.Endpoint())
}

// s3Proxy is Caddy with the resumable block on the bucket s3Bucket of
// gw (its URL and more options), in front of back.
func s3Proxy(t testing.TB, gw *tests3.Server, back *backend, url, options string) (*proxy, string) {
	t.Helper()
	p := &proxy{
		base:   fmt.Sprintf("http://127.0.0.1:%d", testcaddy.FreePort(t)),
		client: &http.Client{Transport: &http.Transport{DisableCompression: true}},
	}
	p.config = globalOptions + fmt.Sprintf(`%s {
	upload_progress {
		resumable /files/ {
			%s
			deliver_to /upload
			%s
		}
	}
	reverse_proxy %s
}
`, p.base, s3Block(gw, url), options, back.addr)
	return p, p.config
}

// startS3Proxy starts the gateway with the bucket, sets its credentials
// in the environment, and runs s3Proxy on s3://uploads/tus, its error
// log in the file logFile names.
func startS3Proxy(t *testing.T, options string) (*proxy, *tests3.Server, *backend) {
	t.Helper()
	gw := tests3.Start(t, s3Bucket)
	gw.SetEnv(t)
	back := newBackend(t)
	p, config := s3Proxy(t, gw, back, "s3://"+s3Bucket+"/tus", options)
	p.dir = filepath.Join(t.TempDir(), "error.log")
	config = strings.Replace(config, "\tlog {\n", "\tlog {\n\t\toutput file "+p.dir+"\n", 1)
	testcaddy.Run(t, config)
	return p, gw, back
}

// logLines counts the lines of the proxy's error log with msg.
func logLines(t testing.TB, p *proxy, msg string) (n int, text string) {
	t.Helper()
	data, err := os.ReadFile(p.dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, `"msg":"`+msg+`"`) {
			n++
			text = line
		}
	}
	return n, text
}

// keysOf lists the bucket's objects of upload id.
func keysOf(gw *tests3.Server, id string) []string {
	var keys []string
	for _, k := range gw.Keys(s3Bucket) {
		if strings.Contains(k, id) {
			keys = append(keys, k)
		}
	}
	return keys
}

// 17 MiB in PATCHes of 6 MiB: tusd's S3 store writes a multipart upload
// of several parts (at least 5 MiB each), the status counts every byte,
// the backend gets the file once, byte-identical, and then only the
// upload's record is left in the bucket, under the prefix.
func TestS3StoresAMultipartUploadOfSeveralParts(t *testing.T) {
	p, gw, back := startS3Proxy(t, "")
	data := payload(17 << 20)
	path := p.create(t, len(data), "")
	id := idOf(path)
	const chunk = 6 << 20
	for offset := 0; offset < 12<<20; offset += chunk {
		if resp, body := p.patch(t, path, offset, data[offset:offset+chunk]); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("PATCH at %d: %d %s", offset, resp.StatusCode, body)
		}
	}
	if parts := gw.MultipartUploads(s3Bucket)["tus/"+id]; parts < 2 {
		t.Fatalf("after two PATCHes of 6 MiB the multipart upload of tus/%s has %d parts, want 2 or more (%v)",
			id, parts, gw.MultipartUploads(s3Bucket))
	}
	_, s := p.status(t, id)
	if s.Status != "paused" || s.Received != 12<<20 {
		t.Fatalf("status between PATCHes: %s received %d, want paused at %d", s.Status, s.Received, 12<<20)
	}
	resp, body := p.patch(t, path, 12<<20, data[12<<20:])
	if resp.StatusCode != http.StatusCreated || !strings.Contains(body, sha256Hex(data)) {
		t.Fatalf("the last PATCH: %d %s, want the backend's 201 with the file's hash", resp.StatusCode, body)
	}
	assertDeliveredOnce(t, back, data)
	s = p.waitStatus(t, id, "complete", func(s caddyprogress.Status) bool { return s.Status == "complete" })
	if s.Received != int64(len(data)) || s.Resumable == nil || s.Resumable.Delivery != "delivered" {
		t.Fatalf("final status: %+v %+v", s, s.Resumable)
	}
	if keys := keysOf(gw, id); len(keys) != 1 || keys[0] != "tus/"+id+".delivery" {
		t.Fatalf("objects of the delivered upload: %v, want only its record tus/%s.delivery", keys, id)
	}
	if left := gw.MultipartUploads(s3Bucket); len(left) != 0 {
		t.Fatalf("multipart uploads left: %v", left)
	}
	// the record answers a HEAD for the delivered upload
	if resp, _ := p.tusRequest(t, http.MethodHead, path, nil, nil); resp.StatusCode != http.StatusOK ||
		resp.Header.Get("Upload-Offset") != fmt.Sprint(len(data)) {
		t.Fatalf("HEAD of the delivered upload: %d offset %q", resp.StatusCode, resp.Header.Get("Upload-Offset"))
	}
}

// An upload without a byte for expire is removed from the bucket: its
// objects, and its multipart upload with its parts, are gone.
func TestS3AbandonedUploadExpiresFromTheBucket(t *testing.T) {
	p, gw, _ := startS3Proxy(t, "expire 1s")
	data := payload(6 << 20)
	path := p.create(t, 8<<20, "")
	id := idOf(path)
	if resp, body := p.patch(t, path, 0, data); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH: %d %s", resp.StatusCode, body)
	}
	s := p.waitStatus(t, id, "aborted", func(s caddyprogress.Status) bool { return s.Status == "aborted" })
	if !strings.Contains(s.Error, "expired") || s.Received != int64(len(data)) {
		t.Fatalf("status of the expired upload: %+v", s)
	}
	if keys := keysOf(gw, id); len(keys) != 0 {
		t.Fatalf("objects of the expired upload left in the bucket: %v", keys)
	}
	if left := gw.MultipartUploads(s3Bucket); len(left) != 0 {
		t.Fatalf("multipart uploads left: %v", left)
	}
	if resp, _ := p.tusRequest(t, http.MethodHead, path, nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("HEAD of the expired upload: %d, want 404", resp.StatusCode)
	}
}

// expire counts from the last write to the bucket, not the creation: an
// upload that got a part 4 s after its creation is still there 7 s after
// it (expire 6s; sweeps every 600 ms), and goes 6 s after that part.
func TestS3ExpiryCountsFromTheLastPart(t *testing.T) {
	p, gw, _ := startS3Proxy(t, "expire 6s")
	path := p.create(t, 12<<20, "")
	id := idOf(path)
	created := time.Now()
	time.Sleep(4 * time.Second)
	if resp, body := p.patch(t, path, 0, payload(6<<20)); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH: %d %s", resp.StatusCode, body)
	}
	time.Sleep(time.Until(created.Add(7 * time.Second)))
	if resp, _ := p.tusRequest(t, http.MethodHead, path, nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD 7 s after the creation, 3 s after the last part: %d, want 200 (expire 6s)", resp.StatusCode)
	}
	p.waitStatus(t, id, "aborted", func(s caddyprogress.Status) bool { return s.Status == "aborted" })
	if keys := keysOf(gw, id); len(keys) != 0 {
		t.Fatalf("objects of the expired upload left in the bucket: %v", keys)
	}
}

// A DELETE terminates the upload: 204, then 404, and nothing of it is
// left in the bucket.
func TestS3DeleteRemovesTheUploadFromTheBucket(t *testing.T) {
	p, gw, back := startS3Proxy(t, "")
	path := p.create(t, 8<<20, "")
	id := idOf(path)
	if resp, body := p.patch(t, path, 0, payload(5<<20+100)); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH: %d %s", resp.StatusCode, body)
	}
	if len(keysOf(gw, id)) == 0 {
		t.Fatal("no object of the upload in the bucket before the DELETE")
	}
	if resp, body := p.tusRequest(t, http.MethodDelete, path, nil, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", resp.StatusCode, body)
	}
	if resp, _ := p.tusRequest(t, http.MethodHead, path, nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("HEAD after DELETE: %d, want 404", resp.StatusCode)
	}
	if keys := keysOf(gw, id); len(keys) != 0 {
		t.Fatalf("objects left after DELETE: %v", keys)
	}
	if left := gw.MultipartUploads(s3Bucket); len(left) != 0 {
		t.Fatalf("multipart uploads left after DELETE: %v", left)
	}
	p.waitStatus(t, id, "aborted", func(s caddyprogress.Status) bool { return s.Status == "aborted" })
	if got := back.got(); len(got) != 0 {
		t.Fatalf("the backend got %d deliveries of a terminated upload", len(got))
	}
}

// The gateway is killed while a PATCH streams: the client gets a 5xx
// with a JSON error that carries no address nor Go error, and once the
// gateway is back, the upload goes on from the stored offset and
// reaches the backend once, byte-identical.
func TestS3DownMidPatchAnswersAClearErrorAndTheUploadResumes(t *testing.T) {
	p, gw, back := startS3Proxy(t, "")
	data := payload(16 << 20)
	path := p.create(t, len(data), "")
	if resp, body := p.patch(t, path, 0, data[:6<<20]); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("first PATCH: %d %s", resp.StatusCode, body)
	}

	// the second PATCH streams its first MiB, then the gateway dies
	body := &pausingReader{data: data[6<<20 : 12<<20], pauseAt: 1 << 20, paused: make(chan struct{}), resume: make(chan struct{})}
	req, err := http.NewRequest(http.MethodPatch, p.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body.data))
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Offset", fmt.Sprint(6<<20))
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	type result struct {
		code int
		body string
	}
	answered := make(chan result, 1)
	go func() {
		resp, err := p.client.Do(req)
		if err != nil {
			answered <- result{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		answered <- result{resp.StatusCode, b.String()}
	}()
	<-body.paused
	// tusd is reading this PATCH's body when the gateway dies
	p.waitStatus(t, idOf(path), "the PATCH's first MiB read", func(s caddyprogress.Status) bool { return s.Received == 7<<20 })
	gw.Kill()
	close(body.resume)
	var r result
	select {
	case r = <-answered:
	case <-time.After(2 * time.Minute):
		t.Fatal("no answer to the PATCH within 2 minutes of the gateway going down")
	}
	if r.code < 500 {
		t.Fatalf("PATCH while S3 is down: %d %q, want a 5xx", r.code, r.body)
	}
	assertJSONError(t, "PATCH while S3 is down", r.body, "try again later")
	for _, leak := range []string{gw.Addr(), "dial tcp", "connect:", "s3store", "operation error"} {
		if strings.Contains(r.body, leak) {
			t.Fatalf("the answer carries internal detail %q: %s", leak, r.body)
		}
	}

	// while the gateway is down, HEADs get a clear 5xx too; the log
	// says why (with the address), at most once a second
	before, _ := logLines(t, p, "reading delivery record")
	start := time.Now()
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			resp, headBody := p.tusRequest(t, http.MethodHead, path, nil, nil)
			if resp.StatusCode < 500 || strings.Contains(headBody, gw.Addr()) {
				t.Errorf("HEAD while S3 is down: %d %q, want a 5xx without the address", resp.StatusCode, headBody)
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	n, line := logLines(t, p, "reading delivery record")
	if logged, most := n-before, int(took/time.Second)+2; logged < 1 || logged > most || !strings.Contains(line, gw.Addr()) {
		t.Fatalf("10 HEADs in %v while S3 is down logged %d lines (want 1 to %d, with the address): %s", took, logged, most, line)
	}

	gw.Start()
	resp, _ := p.tusRequest(t, http.MethodHead, path, nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD once S3 is back: %d", resp.StatusCode)
	}
	var offset int
	fmt.Sscan(resp.Header.Get("Upload-Offset"), &offset)
	if offset < 6<<20 || offset > 12<<20 {
		t.Fatalf("stored offset once S3 is back: %d, want between %d and %d", offset, 6<<20, 12<<20)
	}
	resp, last := p.patch(t, path, offset, data[offset:])
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("the last PATCH from %d: %d %s", offset, resp.StatusCode, last)
	}
	assertDeliveredOnce(t, back, data)
}

// A client whose connection breaks mid-PATCH keeps the bytes that
// arrived: 7 MiB of a 10 MiB body make a part in the bucket, HEAD says
// so, and the upload goes on from there to one delivery.
func TestS3BrokenPatchKeepsTheBytesThatArrived(t *testing.T) {
	p, _, back := startS3Proxy(t, "")
	data := payload(12 << 20)
	path := p.create(t, len(data), "")
	id := idOf(path)
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(p.base, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	head := fmt.Sprintf("PATCH %s HTTP/1.1\r\nHost: %s\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"+
		"Content-Type: application/offset+octet-stream\r\nContent-Length: %d\r\n\r\n", path, strings.TrimPrefix(p.base, "http://"), 10<<20)
	if _, err := conn.Write(append([]byte(head), data[:7<<20]...)); err != nil {
		t.Fatal(err)
	}
	p.waitStatus(t, id, "7 MiB read", func(s caddyprogress.Status) bool { return s.Received == 7<<20 })
	conn.Close()
	p.waitStatus(t, id, "paused", func(s caddyprogress.Status) bool { return s.Status == "paused" })
	resp, _ := p.tusRequest(t, http.MethodHead, path, nil, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Upload-Offset") != fmt.Sprint(7<<20) {
		t.Fatalf("HEAD after the broken PATCH: %d offset %q, want 200 at %d", resp.StatusCode, resp.Header.Get("Upload-Offset"), 7<<20)
	}
	if resp, body := p.patch(t, path, 7<<20, data[7<<20:]); resp.StatusCode != http.StatusCreated {
		t.Fatalf("the last PATCH: %d %s", resp.StatusCode, body)
	}
	assertDeliveredOnce(t, back, data)
}

// A creation the store refuses (metadata past the 2 KiB S3 takes) gets
// 400 with a JSON error, and leaves nothing: no record in the bucket,
// and no max_disk room held (a creation of all of max_disk fits next).
// Before, its record, written before tusd asked the store, stayed with
// its reservation until expire, and the next creation got 507.
func TestS3CreationRefusedByTheStoreLeavesNothing(t *testing.T) {
	p, gw, _ := startS3Proxy(t, "max_disk 10MiB")
	note := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("n"), 3000))
	resp, body := p.tusRequest(t, http.MethodPost, "/files/", map[string]string{
		"Upload-Length": fmt.Sprint(10 << 20), "Upload-Metadata": "note " + note}, nil)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("creation with 3000 bytes of metadata: %d %s, want 400", resp.StatusCode, body)
	}
	assertJSONError(t, "creation with 3000 bytes of metadata", body, "the S3 store takes at most 2048")
	for _, key := range gw.Keys(s3Bucket) {
		t.Errorf("object left by the refused creation: %s", key)
	}
	if left := gw.MultipartUploads(s3Bucket); len(left) != 0 {
		t.Errorf("multipart uploads left by the refused creation: %v", left)
	}
	resp, body = p.tusRequest(t, http.MethodPost, "/files/", map[string]string{"Upload-Length": fmt.Sprint(10 << 20)}, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("a creation of all of max_disk after the refused one: %d %s, want 201", resp.StatusCode, body)
	}
}

// Caddy is killed (SIGKILL) between two PATCHes and started again: the
// upload is known from the bucket at once (paused at the stored offset),
// and goes on from there to one delivery.
func TestS3PausedUploadIsKnownFromTheBucketAfterARestart(t *testing.T) {
	gw := tests3.Start(t, s3Bucket)
	gw.SetEnv(t) // the Caddy processes inherit it
	back := newBackend(t)
	p, _ := s3Proxy(t, gw, back, "s3://"+s3Bucket, "")
	first := p.startChild(t)
	data := payload(9 << 20)
	path := p.create(t, len(data), "")
	id := idOf(path)
	if resp, body := p.patch(t, path, 0, data[:6<<20]); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("first PATCH: %d %s", resp.StatusCode, body)
	}
	_ = first.Process.Kill()
	_ = first.Wait()
	p.startChild(t)

	code, s := p.status(t, id)
	if code != http.StatusOK || s.Status != "paused" || s.Received != 6<<20 || s.Total == nil || *s.Total != int64(len(data)) {
		t.Fatalf("after the restart, before any request of the client: %d %+v", code, s)
	}
	if resp, body := p.patch(t, path, 6<<20, data[6<<20:]); resp.StatusCode != http.StatusCreated {
		t.Fatalf("last PATCH: %d %s", resp.StatusCode, body)
	}
	assertDeliveredOnce(t, back, data)
}

// An upload of deferred length: its PATCHes go to the bucket before its
// length is known, the last one declares it, and the file is delivered
// once, byte-identical.
func TestS3DeferredLengthUpload(t *testing.T) {
	p, _, back := startS3Proxy(t, "")
	data := payload(13 << 20)
	resp, body := p.tusRequest(t, http.MethodPost, "/files/", map[string]string{"Upload-Defer-Length": "1"}, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("creation of deferred length: %d %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	path := loc[strings.Index(loc, "/files/"):]
	if resp, body := p.patch(t, path, 0, data[:6<<20]); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH of deferred length: %d %s", resp.StatusCode, body)
	}
	resp, body = p.tusRequest(t, http.MethodPatch, path, map[string]string{
		"Upload-Offset": fmt.Sprint(6 << 20), "Upload-Length": fmt.Sprint(len(data)),
		"Content-Type": "application/offset+octet-stream"}, data[6<<20:])
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("the last PATCH, declaring the length: %d %s", resp.StatusCode, body)
	}
	assertDeliveredOnce(t, back, data)
}

// pausingReader hands data out until pauseAt, signals paused, and waits
// for resume before the rest.
type pausingReader struct {
	data    []byte
	pos     int
	pauseAt int
	paused  chan struct{}
	resume  chan struct{}
}

func (r *pausingReader) Read(p []byte) (int, error) {
	if r.pos == r.pauseAt {
		close(r.paused)
		<-r.resume
		r.pauseAt = -1
	}
	if r.pos >= len(r.data) {
		return 0, io.EOF
	}
	end := len(r.data)
	if r.pauseAt > r.pos {
		end = r.pauseAt
	}
	n := copy(p, r.data[r.pos:end])
	r.pos += n
	return n, nil
}

// Bad s3 settings are refused at load, saying what is wrong: a URL that
// is not s3://<bucket>[/<prefix>], dir and s3 together, a bucket that
// does not exist, wrong credentials.
func TestS3BadSettingsAreRefusedAtLoad(t *testing.T) {
	gw := tests3.Start(t, s3Bucket)
	gw.SetEnv(t)
	back := newBackend(t)
	for _, c := range []struct{ url, options, want string }{
		{"https://uploads", "", "expected s3://<bucket> or s3://<bucket>/<prefix>"},
		{"s3://Up_Loads", "", "may hold only lower-case letters, digits, dots and hyphens"},
		{"s3://uploads/../x", "", "prefix"},
		{"s3://uploads", "dir /tmp/x", "set one of them"},
		{"s3://missing-bucket", "", `bucket "missing-bucket" at http://` + gw.Addr() + ` does not answer: NotFound (create the bucket first)`},
	} {
		_, config := s3Proxy(t, gw, back, c.url, c.options)
		err := adaptAndValidate(config)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("s3 %s %s: %v, want an error saying %q", c.url, c.options, err, c.want)
		}
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
	_, config := s3Proxy(t, gw, back, "s3://"+s3Bucket, "")
	if err := adaptAndValidate(config); err == nil || !strings.Contains(err.Error(), `bucket "uploads" at `+gw.Endpoint()+` does not answer`) {
		t.Errorf("wrong secret: %v, want an error naming the bucket and endpoint", err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	if err := adaptAndValidate(config); err == nil || !strings.Contains(err.Error(), "(set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)") {
		t.Errorf("no credentials: %v, want an error saying which variables to set", err)
	}
}

// adaptAndValidate adapts a Caddyfile and provisions it, without
// running it: the Caddyfile's error, or the config's.
func adaptAndValidate(caddyfile string) error {
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		return err
	}
	var config caddy.Config
	if err := json.Unmarshal(adapted, &config); err != nil {
		return err
	}
	return caddy.Validate(&config)
}
