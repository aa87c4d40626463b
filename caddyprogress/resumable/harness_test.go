package resumable_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testkit"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// payload is deterministic pseudo-random test data (testkit's, seed 0).
func payload(size int) []byte { return testkit.Payload(0, size) }

// sha256Hex is a body's SHA-256 as the upstream reports it.
var sha256Hex = testkit.SHA256Hex

// The tests run real Caddy in this process (internal/testcaddy), one
// config at a time: they must not run in parallel.

func TestMain(m *testing.M) {
	if config := os.Getenv(childConfigEnv); config != "" {
		runChildCaddy(config)
		return
	}
	os.Exit(testcaddy.Main(m))
}

// childConfigEnv, set to a Caddyfile, makes the test binary run Caddy
// with it until killed: a Caddy process a test can kill mid-upload.
const childConfigEnv = "RESUMABLE_TEST_CHILD_CADDYFILE"

func runChildCaddy(caddyfile string) {
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err == nil {
		err = caddy.Load(cfg, true)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	select {}
}

// globalOptions are testcaddy's, with a short grace period so a stop
// does not wait for uploads in flight.
var globalOptions = strings.Replace(testcaddy.GlobalOptions, "admin off", "admin off\n\tgrace_period 200ms", 1)

// backend is a plain POST handler that hashes each body it gets and
// answers 201 with {"sha256": "...", "bytes": N}, or the status set.
type backend struct {
	addr string
	srv  *http.Server
	ln   net.Listener

	status atomic.Int32                // the status to answer; 0 for 201
	header atomic.Pointer[http.Header] // headers added to each answer, if set

	mu         sync.Mutex
	deliveries []delivery
}

// delivery is one request the backend got.
type delivery struct {
	method, path string
	header       http.Header
	bytes        int64
	sha256       string
	body         []byte // kept when small (multipart tests)
}

// newBackend starts a backend on a free port, stopped when the test ends.
func newBackend(t testing.TB) *backend {
	t.Helper()
	b := &backend{addr: fmt.Sprintf("127.0.0.1:%d", testcaddy.FreePort(t))}
	b.start(t)
	t.Cleanup(b.stop)
	return b
}

// start listens on the backend's address (again, after stop).
func (b *backend) start(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", b.addr)
	if err != nil {
		t.Fatalf("backend listening: %v", err)
	}
	b.ln = ln
	srv := &http.Server{Handler: http.HandlerFunc(b.serve)}
	b.srv = srv
	go func() { _ = srv.Serve(ln) }()
}

// stop closes the backend: deliveries get connection refused.
func (b *backend) stop() {
	if b.srv != nil {
		_ = b.srv.Close()
		b.srv = nil
	}
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	var small bytes.Buffer
	n, err := io.Copy(io.MultiWriter(h, &limitedBuffer{buf: &small, max: 1 << 20}), r.Body)
	if err != nil {
		return
	}
	d := delivery{method: r.Method, path: r.URL.Path, header: r.Header.Clone(), bytes: n, sha256: hex.EncodeToString(h.Sum(nil)), body: small.Bytes()}
	b.mu.Lock()
	b.deliveries = append(b.deliveries, d)
	b.mu.Unlock()
	code := int(b.status.Load())
	if code == 0 {
		code = http.StatusCreated
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Backend", "yes")
	if extra := b.header.Load(); extra != nil {
		for name, values := range *extra {
			w.Header()[name] = values
		}
	}
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"sha256":%q,"bytes":%d}`, d.sha256, n)
}

func (b *backend) got() []delivery {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]delivery(nil), b.deliveries...)
}

type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room > 0 {
		l.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// proxy is Caddy with upload_progress { resumable /files/ { ... } } in
// front of a backend.
type proxy struct {
	base   string // http://127.0.0.1:<port>
	dir    string // the upload folder
	config string
	client *http.Client
}

// startProxy runs Caddy with the resumable block (dir and deliver_to
// /upload set, then options) and upload_progress options, in front of
// back; stopped when the test ends.
func startProxy(t testing.TB, back *backend, options string, progressOptions ...string) *proxy {
	t.Helper()
	p := newProxy(t, back, options, progressOptions...)
	testcaddy.Run(t, p.config)
	return p
}

// newProxy makes the config of startProxy, without running it.
func newProxy(t testing.TB, back *backend, options string, progressOptions ...string) *proxy {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "uploads")
	port := testcaddy.FreePort(t)
	p := &proxy{
		base:   fmt.Sprintf("http://127.0.0.1:%d", port),
		dir:    dir,
		client: &http.Client{Transport: &http.Transport{DisableCompression: true}},
	}
	p.config = globalOptions + fmt.Sprintf(`%s {
	upload_progress {
		%s
		resumable /files/ {
			dir %s
			deliver_to /upload
			%s
		}
	}
	reverse_proxy %s
}
`, p.base, strings.Join(progressOptions, "\n\t\t"), dir, options, back.addr)
	return p
}

// startChild runs the proxy in a Caddy process of its own, killed when
// the test ends, and waits until it answers.
func (p *proxy) startChild(t testing.TB) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childConfigEnv+"="+p.config)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting a Caddy process: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := p.client.Get(p.base + "/upload/status/ready")
		if err == nil {
			resp.Body.Close()
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Caddy process does not answer: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restart stops Caddy and starts it again with the same config.
func (p *proxy) restart(t testing.TB) {
	t.Helper()
	if err := caddy.Stop(); err != nil {
		t.Fatalf("stopping Caddy: %v", err)
	}
	testcaddy.Load(t, p.config)
}

// status polls the status route (across a reload: testkit.Get).
func (p *proxy) status(t testing.TB, id string) (int, caddyprogress.Status) {
	t.Helper()
	resp, err := testkit.Get(p.client, p.base+"/upload/status/"+id)
	if err != nil {
		t.Fatalf("polling status: %v", err)
	}
	defer resp.Body.Close()
	var s caddyprogress.Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("decoding status: %v", err)
	}
	return resp.StatusCode, s
}

// waitStatus polls until cond holds for the upload's status, or fails.
func (p *proxy) waitStatus(t testing.TB, id, what string, cond func(s caddyprogress.Status) bool) caddyprogress.Status {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, s := p.status(t, id)
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload %s: waited 30s for %s; last status %+v", id, what, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writePayload writes size bytes of payload to a file in a temporary dir.
func writePayload(t testing.TB, size int) (string, []byte) {
	t.Helper()
	data := payload(size)
	path := filepath.Join(t.TempDir(), "payload.bin")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, data
}

// idOf is the upload ID at the end of an upload URL.
func idOf(url string) string { return url[strings.LastIndex(url, "/")+1:] }

// tusRequest sends one tus request with Tus-Resumable set.
func (p *proxy) tusRequest(t testing.TB, method, path string, header map[string]string, body []byte) (*http.Response, string) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, p.base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// create makes an upload of size bytes and returns its path.
func (p *proxy) create(t testing.TB, size int, metadata string) string {
	t.Helper()
	resp, body := p.tusRequest(t, http.MethodPost, "/files/", map[string]string{
		"Upload-Length": fmt.Sprint(size), "Upload-Metadata": metadata}, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("creating an upload: %d %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	return loc[strings.Index(loc, "/files/"):]
}

// patch sends bytes at offset.
func (p *proxy) patch(t testing.TB, path string, offset int, data []byte) (*http.Response, string) {
	t.Helper()
	return p.tusRequest(t, http.MethodPatch, path, map[string]string{
		"Upload-Offset": fmt.Sprint(offset), "Content-Type": "application/offset+octet-stream"}, data)
}

// nodeDir is the folder of the Node test clients.
var nodeDir, _ = filepath.Abs("testdata/node")

// needNode skips the test when the Node clients are not installed
// (npm ci in testdata/node), unless CI is set: then it fails.
func needNode(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node is not installed: %v", err)
		}
		t.Skip("node is not installed")
	}
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "tus-js-client")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("run npm ci in %s: %v", nodeDir, err)
		}
		t.Skipf("the Node clients are not installed: run npm ci in %s", nodeDir)
	}
}

// nodeClient is a running Node test client.
type nodeClient struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan map[string]any
	stderr bytes.Buffer
}

// runNode starts node <script> <args...> in testdata/node; its JSON
// output lines arrive on events.
func runNode(t testing.TB, script string, args ...string) *nodeClient {
	t.Helper()
	needNode(t)
	c := &nodeClient{events: make(chan map[string]any, 100)}
	c.cmd = exec.Command("node", append([]string{script}, args...)...)
	c.cmd.Dir = nodeDir
	c.cmd.Stderr = &c.stderr
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting node: %v", err)
	}
	go func() {
		defer close(c.events)
		scanner := bufio.NewScanner(stdout)
		scanner.Buffer(make([]byte, 1<<20), 4<<20)
		for scanner.Scan() {
			var ev map[string]any
			if json.Unmarshal(scanner.Bytes(), &ev) == nil {
				c.events <- ev
			}
		}
	}()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	})
	return c
}

// next waits for the client's next event.
func (c *nodeClient) next(t testing.TB, timeout time.Duration) map[string]any {
	t.Helper()
	select {
	case ev, ok := <-c.events:
		if !ok {
			t.Fatalf("the Node client ended without an event; stderr: %s", c.stderr.String())
		}
		return ev
	case <-time.After(timeout):
		t.Fatalf("no event from the Node client in %v; stderr: %s", timeout, c.stderr.String())
	}
	return nil
}

// await waits for the named event, failing on an unexpected one.
func (c *nodeClient) await(t testing.TB, name string, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ev := c.next(t, time.Until(deadline))
		if ev["event"] == name {
			return ev
		}
		switch ev["event"] {
		case "created", "found", "resumed", "paused":
			continue
		}
		t.Fatalf("waiting for %s, the Node client said %v", name, ev)
	}
}

func (c *nodeClient) send(t testing.TB, line string) {
	t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		t.Fatalf("writing to the Node client: %v", err)
	}
}

// multipartFile parses a one-file multipart body: field, filename,
// content type and content.
func multipartFile(t testing.TB, contentType string, body []byte) (field, filename, partType string, content []byte) {
	t.Helper()
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		t.Fatalf("delivery Content-Type %q: %v", contentType, err)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	part, err := mr.NextPart()
	if err != nil {
		t.Fatalf("reading the delivered multipart body: %v", err)
	}
	content, err = io.ReadAll(part)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Fatalf("the delivered multipart body has more than one part: %v", err)
	}
	return part.FormName(), part.FileName(), part.Header.Get("Content-Type"), content
}

func osStat(dir, name string) (os.FileInfo, error) { return os.Stat(filepath.Join(dir, name)) }

// fmtSscan reads the first two words of r (a status line's protocol and code).
func fmtSscan(r io.Reader, proto *string, code *int) (int, error) {
	return fmt.Fscan(bufio.NewReader(r), proto, code)
}
