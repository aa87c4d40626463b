package caddyprogress

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testkit"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// payload is deterministic pseudo-random test data (testkit's, seed 0).
func payload(size int) []byte { return testkit.Payload(0, size) }

// sha256Hex is a body's SHA-256 as the upstream reports it.
var sha256Hex = testkit.SHA256Hex

// The tests run real Caddy in this process (internal/testcaddy), one
// config at a time: they must not run in parallel.

func TestMain(m *testing.M) { os.Exit(testcaddy.Main(m)) }

// proxy is a running Caddy with upload_progress in front of an upstream.
type proxy struct {
	base   string // e.g. http://127.0.0.1:1234
	client *http.Client
}

// startProxy runs Caddy with `upload_progress { <options> }` before
// `reverse_proxy <upstream>` on a fresh port, stopped when the test ends.
// extra goes into the site block before upload_progress.
func startProxy(t testing.TB, options, upstream string, extra ...string) *proxy {
	t.Helper()
	port := testcaddy.FreePort(t)
	site := fmt.Sprintf("http://127.0.0.1:%d", port)
	testcaddy.Run(t, testcaddy.GlobalOptions+siteBlock(site, options, upstream, extra...))
	return &proxy{base: site, client: &http.Client{Transport: &http.Transport{DisableCompression: true}}}
}

func siteBlock(site, options, upstream string, extra ...string) string {
	return fmt.Sprintf("%s {\n%s\n\tupload_progress {\n%s\n\t}\n\treverse_proxy %s\n}\n",
		site, strings.Join(extra, "\n"), options, upstream)
}

// upstream is a real HTTP backend that hashes every body it gets.
type upstream struct {
	*httptest.Server
	host string

	mu       sync.Mutex
	received map[string]receivedUpload // by X-Upload-ID
	requests atomic.Int64

	// delay, if set, is how long to wait after reading the body.
	delay time.Duration
	// status, if set, is the status code to answer.
	status int
	// started is signalled (without blocking) when a request arrives.
	started chan string
}

type receivedUpload struct {
	bytes  int64
	sha256 string
	header http.Header
}

func newUpstream(t testing.TB) *upstream {
	t.Helper()
	u := &upstream{received: make(map[string]receivedUpload), started: make(chan string, 64)}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	u.host = strings.TrimPrefix(u.URL, "http://")
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	u.requests.Add(1)
	id := r.Header.Get("X-Upload-ID")
	select {
	case u.started <- id:
	default:
	}
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		return
	}
	u.mu.Lock()
	u.received[id] = receivedUpload{bytes: n, sha256: hex.EncodeToString(h.Sum(nil)), header: r.Header.Clone()}
	u.mu.Unlock()
	if u.delay > 0 {
		time.Sleep(u.delay)
	}
	code := u.status
	if code == 0 {
		code = http.StatusOK
	}
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"bytes":%d}`, n)
}

func (u *upstream) get(id string) (receivedUpload, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	r, ok := u.received[id]
	return r, ok
}

// pacedReader hands out data in chunks with a pause after each, so an
// upload lasts long enough to be watched. sent counts what it handed out.
type pacedReader struct {
	data  []byte
	chunk int
	pause time.Duration
	sent  atomic.Int64
	// stopAt, if > 0, makes Read block (until release is closed) once
	// that many bytes have been handed out.
	stopAt  int64
	release chan struct{}
}

func (p *pacedReader) Read(b []byte) (int, error) {
	off := p.sent.Load()
	if off >= int64(len(p.data)) {
		return 0, io.EOF
	}
	if p.stopAt > 0 && off >= p.stopAt {
		<-p.release
		p.stopAt = 0
	}
	n := min(len(b), p.chunk, len(p.data)-int(off))
	if p.stopAt > 0 {
		n = min(n, int(p.stopAt-off))
	}
	copy(b, p.data[off:off+int64(n)])
	p.sent.Add(int64(n))
	if p.pause > 0 {
		time.Sleep(p.pause)
	}
	return n, nil
}

// getStatus polls the status route (across a reload: testkit.Get).
func (p *proxy) getStatus(t testing.TB, id string) (int, Status) {
	t.Helper()
	resp, err := testkit.Get(p.client, p.base+DefaultStatusPath+id)
	if err != nil {
		t.Fatalf("polling status: %v", err)
	}
	defer resp.Body.Close()
	var s Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("decoding status: %v", err)
	}
	return resp.StatusCode, s
}

// waitFor polls until cond holds for the upload's status, or fails.
func (p *proxy) waitFor(t testing.TB, id string, what string, cond func(code int, s Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, s := p.getStatus(t, id)
		if cond(code, s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload %s: waited 20s for %s; last status %d %+v", id, what, code, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *proxy) waitForStatus(t testing.TB, id, want string) Status {
	t.Helper()
	return p.waitFor(t, id, "status "+want, func(_ int, s Status) bool { return s.Status == want })
}

// upload sends body with the given headers and returns the response and
// its body.
func (p *proxy) upload(t testing.TB, method, path string, body io.Reader, contentLength int64, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, p.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = contentLength
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading upload response: %v", err)
	}
	return resp, respBody
}

// sseEvent is one Server-Sent Event as received.
type sseEvent struct {
	name string // "" for progress events
	id   string
	data string
	at   time.Time
}

func (e sseEvent) status(t testing.TB) Status {
	t.Helper()
	var s Status
	if err := json.Unmarshal([]byte(e.data), &s); err != nil {
		t.Fatalf("event data %q: %v", e.data, err)
	}
	return s
}

// sseStream reads events from an events route until the stream ends.
type sseStream struct {
	resp   *http.Response
	events chan sseEvent
	retry  string
	done   chan struct{}
	err    error // why the stream ended, once done is closed
}

func (p *proxy) subscribe(t testing.TB, id string) *sseStream {
	t.Helper()
	return subscribeURL(t, p.client, p.base+DefaultEventsPath+id)
}

func subscribeURL(t testing.TB, client *http.Client, url string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("subscribing: %v", err)
	}
	s := &sseStream{resp: resp, events: make(chan sseEvent, 10000), done: make(chan struct{})}
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-s.done
	})
	go s.read()
	return s
}

func (s *sseStream) read() {
	defer close(s.done)
	defer close(s.events)
	s.retry, s.err = testkit.ReadEvents(s.resp.Body, 1<<20, func(e testkit.Event) bool {
		s.events <- sseEvent{name: e.Name, id: e.ID, data: e.Data, at: time.Now()}
		return true
	})
}

// next returns the next event, or fails after timeout.
func (s *sseStream) next(t testing.TB, timeout time.Duration) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatalf("event stream ended (%v) while an event was expected", s.err)
		}
		return ev
	case <-time.After(timeout):
		t.Fatalf("no event within %s", timeout)
	}
	return sseEvent{}
}

// all collects every event until the stream ends, or fails after timeout.
func (s *sseStream) all(t testing.TB, timeout time.Duration) []sseEvent {
	t.Helper()
	var events []sseEvent
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return events
			}
			events = append(events, ev)
		case <-deadline:
			t.Fatalf("event stream did not end within %s; got %d events", timeout, len(events))
		}
	}
}

// h2Client speaks HTTP/2 over TLS to Caddy's internal-CA certificate.
func h2Client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		ForceAttemptHTTP2:  true,
		DisableCompression: true,
		TLSClientConfig:    &tls.Config{InsecureSkipVerify: true}, // Caddy's internal CA, made for this test
	}}
}
