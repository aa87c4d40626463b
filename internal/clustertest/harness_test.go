package clustertest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testkit"

	"github.com/coder/websocket"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

// payload is deterministic pseudo-random test data (testkit's, seed 0).
func payload(size int) []byte { return testkit.Payload(0, size) }

// sha256Hex is a body's SHA-256 as the upstream reports it.
var sha256Hex = testkit.SHA256Hex

// caddyBinary is the caddy built from ./caddy-build for this run.
var caddyBinary string

// TestMain builds caddy once (without -race: the binary runs as other
// processes; the race detector still covers this package's code).
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "clustertest")
	if err != nil {
		panic(err)
	}
	caddyBinary = filepath.Join(dir, "caddy")
	build := exec.Command("go", "build", "-o", caddyBinary, "../../caddy-build")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building caddy: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// instance is one Caddy process with upload_progress in front of an
// upstream, sharing its tracker through Redis.
type instance struct {
	t       testing.TB
	name    string
	base    string // http://127.0.0.1:<port>
	admin   string // http://127.0.0.1:<admin port>
	client  *http.Client
	cmd     *exec.Cmd
	log     *bytes.Buffer
	logLock *lockedWriter // guards log
	exited  chan struct{}
}

// startInstance runs caddy with `upload_progress { redis {env.REDIS_URL}
// <options> }` before `reverse_proxy <upstream>`; without redis when
// redisURL is "".
func startInstance(t testing.TB, name string, redisURL, options, upstream string) *instance {
	t.Helper()
	redisLine := "\t\tredis {env.REDIS_URL}"
	if redisURL == "" {
		redisLine = ""
	}
	port, adminPort := testkit.FreePort(t), testkit.FreePort(t)
	dir := t.TempDir()
	caddyfile := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	skip_install_trust
	log {
		level WARN
	}
}
http://127.0.0.1:%d {
	upload_progress {
%s
%s
	}
	reverse_proxy %s
}
`, adminPort, port, redisLine, options, upstream)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	inst := &instance{
		t:      t,
		name:   name,
		base:   fmt.Sprintf("http://127.0.0.1:%d", port),
		admin:  fmt.Sprintf("http://127.0.0.1:%d", adminPort),
		client: &http.Client{Transport: &http.Transport{DisableCompression: true}},
		log:    new(bytes.Buffer),
		exited: make(chan struct{}),
	}
	inst.cmd = exec.Command(caddyBinary, "run", "--config", path, "--adapter", "caddyfile")
	inst.cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir, "REDIS_URL="+redisURL)
	inst.logLock = &lockedWriter{w: inst.log}
	inst.cmd.Stdout, inst.cmd.Stderr = inst.logLock, inst.logLock // one lock: exec copies each in its own goroutine
	if err := inst.cmd.Start(); err != nil {
		t.Fatalf("starting caddy %s: %v", name, err)
	}
	go func() {
		_ = inst.cmd.Wait()
		close(inst.exited)
	}()
	t.Cleanup(func() {
		inst.stop()
		if t.Failed() {
			t.Logf("caddy %s log:\n%s", name, inst.logText())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(inst.base + "/upload/status/ready-check")
		if err == nil {
			resp.Body.Close()
			return inst
		}
		select {
		case <-inst.exited:
			t.Fatalf("caddy %s exited at start:\n%s", name, inst.logText())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy %s did not answer within 20s:\n%s", name, inst.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill ends the instance with SIGKILL: what a crash leaves.
func (inst *instance) kill() {
	_ = inst.cmd.Process.Signal(syscall.SIGKILL)
	<-inst.exited
}

// stop ends the instance gracefully, or kills it after 10s.
func (inst *instance) stop() {
	select {
	case <-inst.exited:
		return
	default:
	}
	_ = inst.cmd.Process.Signal(os.Interrupt)
	select {
	case <-inst.exited:
	case <-time.After(10 * time.Second):
		inst.kill()
	}
}

func (inst *instance) logText() string {
	inst.logLock.mu.Lock()
	defer inst.logLock.mu.Unlock()
	return inst.log.String()
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// startRedis runs a redis-server for the test (skipped without one).
func startRedis(t testing.TB) *testredis.Server { return testredis.Start(t) }

// status is the part of the status JSON the tests read.
type status struct {
	ID             string     `json:"id"`
	Status         string     `json:"status"`
	Received       int64      `json:"received"`
	Total          *int64     `json:"total"`
	Error          string     `json:"error"`
	FinishedAt     *time.Time `json:"finished_at"`
	UpstreamStatus *int       `json:"upstream_status"`
}

// groupStatus is the part of a group's status JSON the tests read.
type groupStatus struct {
	Group    string   `json:"group"`
	Status   string   `json:"status"`
	Received int64    `json:"received"`
	Uploads  []status `json:"uploads"`
}

// getJSON GETs path and decodes its JSON answer into v.
func (inst *instance) getJSON(t testing.TB, path string, v any) int {
	t.Helper()
	resp, err := inst.client.Get(inst.base + path)
	if err != nil {
		t.Fatalf("GET %s on %s: %v", path, inst.name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s on %s: %d %q: %v", path, inst.name, resp.StatusCode, body, err)
	}
	return resp.StatusCode
}

func (inst *instance) status(t testing.TB, id string) (int, status) {
	t.Helper()
	var s status
	code := inst.getJSON(t, "/upload/status/"+id, &s)
	return code, s
}

// waitFor polls the status route until cond holds, or fails after limit.
func (inst *instance) waitFor(t testing.TB, id string, limit time.Duration, what string, cond func(code int, s status) bool) status {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		code, s := inst.status(t, id)
		if cond(code, s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload %s on %s: waited %s for %s; last %d %+v", id, inst.name, limit, what, code, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// result is how an upload request ended.
type result struct {
	code int
	err  error
	took time.Duration
}

// upload sends body through the instance with the given headers.
func (inst *instance) upload(id string, body io.Reader, size int64, header http.Header) result {
	start := time.Now()
	req, err := http.NewRequest(http.MethodPost, inst.base+"/upload", body)
	if err != nil {
		return result{err: err}
	}
	req.ContentLength = size
	for k, v := range header {
		req.Header[k] = v
	}
	if id != "" {
		req.Header.Set("X-Upload-ID", id)
	}
	resp, err := inst.client.Do(req)
	if err != nil {
		return result{err: err, took: time.Since(start)}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return result{code: resp.StatusCode, took: time.Since(start)}
}

// uploadAsync runs upload in a goroutine.
func (inst *instance) uploadAsync(id string, body io.Reader, size int64, header http.Header) <-chan result {
	done := make(chan result, 1)
	go func() { done <- inst.upload(id, body, size, header) }()
	return done
}

// upstream is a real backend that hashes every body and counts the
// bytes of each as they arrive.
type upstream struct {
	*httptest.Server
	host string

	mu       sync.Mutex
	received map[string]string // by X-Upload-ID: the body's SHA-256
	bytes    atomic.Int64      // every body's bytes so far
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{received: make(map[string]string)}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	u.host = strings.TrimPrefix(u.URL, "http://")
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Body.Read(buf)
		h.Write(buf[:n])
		u.bytes.Add(int64(n))
		if err == io.EOF {
			break
		}
		if err != nil {
			return
		}
	}
	u.mu.Lock()
	u.received[r.Header.Get("X-Upload-ID")] = hex.EncodeToString(h.Sum(nil))
	u.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (u *upstream) sha(id string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.received[id]
}

// pacedReader hands data out in chunks with a pause after each, so that
// an upload lasts long enough to be watched.
type pacedReader struct {
	data  []byte
	chunk int
	pause time.Duration
	sent  atomic.Int64
}

func paced(data []byte, chunk int, pause time.Duration) *pacedReader {
	return &pacedReader{data: data, chunk: chunk, pause: pause}
}

func (p *pacedReader) Read(b []byte) (int, error) {
	off := p.sent.Load()
	if off >= int64(len(p.data)) {
		return 0, io.EOF
	}
	n := min(len(b), p.chunk, len(p.data)-int(off))
	copy(b, p.data[off:off+int64(n)])
	p.sent.Add(int64(n))
	if p.pause > 0 {
		time.Sleep(p.pause)
	}
	return n, nil
}

// sseEvent is one Server-Sent Event as received.
type sseEvent struct {
	name string // "" for progress events
	data string
}

func (e sseEvent) status(t testing.TB) status {
	t.Helper()
	var s status
	if err := json.Unmarshal([]byte(e.data), &s); err != nil {
		t.Fatalf("event data %q: %v", e.data, err)
	}
	return s
}

// sseStream reads the events of an events route until it ends.
type sseStream struct {
	events chan sseEvent
	done   chan struct{}
}

func (inst *instance) subscribe(t testing.TB, path string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, inst.base+path, nil)
	resp, err := inst.client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("subscribing on %s: %v", inst.name, err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("subscribing on %s: %s", inst.name, resp.Status)
	}
	s := &sseStream{events: make(chan sseEvent, 10000), done: make(chan struct{})}
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-s.done
	})
	go func() {
		defer close(s.done)
		defer close(s.events)
		_, _ = testkit.ReadEvents(resp.Body, 1<<20, func(e testkit.Event) bool {
			s.events <- sseEvent{name: e.Name, data: e.Data}
			return true
		})
	}()
	return s
}

// all collects the events until the stream ends, or fails after limit.
func (s *sseStream) all(t testing.TB, limit time.Duration) []sseEvent {
	t.Helper()
	var events []sseEvent
	deadline := time.After(limit)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return events
			}
			events = append(events, ev)
		case <-deadline:
			t.Fatalf("event stream did not end within %s; got %d events", limit, len(events))
		}
	}
}

// checkStream checks an upload's events: progress monotonic, exactly
// one final event, the last, named want. It returns the final status.
func checkStream(t testing.TB, events []sseEvent, want string) status {
	t.Helper()
	var last int64 = -1
	finals := 0
	var final status
	for i, ev := range events {
		switch ev.name {
		case "pending":
			continue
		case "":
			s := ev.status(t)
			if s.Received < last {
				t.Errorf("event %d: received went back from %d to %d", i, last, s.Received)
			}
			last = s.Received
		default:
			finals++
			final = ev.status(t)
			if ev.name != want {
				t.Errorf("final event %q, want %q (%s)", ev.name, want, ev.data)
			}
			if i != len(events)-1 {
				t.Errorf("final event %d is not the last of %d", i, len(events))
			}
			if final.Received < last {
				t.Errorf("final event: received %d below the last progress %d", final.Received, last)
			}
		}
	}
	if finals != 1 {
		t.Errorf("got %d final events, want exactly 1: %v", finals, events)
	}
	return final
}

func jsonDecode(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// get GETs url and returns its body.
func get(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// wsMessage is one message of the WebSocket route.
type wsMessage struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// wsFollow reads the WebSocket route's messages in a goroutine, until
// the server closes the socket; then messages holds them, and status
// the close status (-1 for a closure without one).
type wsFollow struct {
	messages []wsMessage
	status   websocket.StatusCode
	err      error
	first    chan struct{} // closed once the first message arrived, or the socket ended
	done     chan struct{}
}

func (inst *instance) followWS(t testing.TB, path string) *wsFollow {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(inst.base, "http")+path, &websocket.DialOptions{HTTPClient: inst.client})
	if err != nil {
		cancel()
		t.Fatalf("WebSocket to %s on %s: %v (%v)", path, inst.name, err, resp)
	}
	f := &wsFollow{first: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer cancel()
		var firstOnce sync.Once
		defer firstOnce.Do(func() { close(f.first) })
		for {
			_, data, err := c.Read(ctx)
			if err != nil {
				f.status, f.err = websocket.CloseStatus(err), err
				return
			}
			var m wsMessage
			if err := json.Unmarshal(data, &m); err != nil {
				f.err = fmt.Errorf("message %q: %w", data, err)
				_ = c.CloseNow()
				return
			}
			f.messages = append(f.messages, m)
			firstOnce.Do(func() { close(f.first) })
		}
	}()
	t.Cleanup(func() {
		_ = c.CloseNow()
		<-f.done
	})
	// The 101 goes out before the server looks the ID up: wait for its
	// first message, so that what the caller does next comes after it.
	select {
	case <-f.first:
	case <-time.After(10 * time.Second):
		t.Fatalf("no first message on the WebSocket to %s on %s within 10s", path, inst.name)
	}
	return f
}

// wait waits for the server to close the socket, or fails after limit.
func (f *wsFollow) wait(t testing.TB, limit time.Duration) {
	t.Helper()
	select {
	case <-f.done:
	case <-time.After(limit):
		t.Fatalf("the WebSocket did not close within %s; %d messages", limit, len(f.messages))
	}
}
