package resumable_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// scriptedBackend answers each delivery of an upload (by its
// X-Upload-ID) as its script says, in order; "ok" once the script is
// spent:
//
//	ok        read the body, answer 201 {"sha256": ..., "bytes": N}
//	reset     read the body, then reset the connection: no answer
//	truncate  read the body, send 200 headers (Content-Length 1000) and
//	          10 bytes of the body, then reset the connection
//	early     answer 200 at once, without reading the body
type scriptedBackend struct {
	*backend // its addr; its deliveries are the "ok" ones

	mu     sync.Mutex
	script map[string][]string
	served chan string // "<id> <behaviour>", for each delivery
}

func newScriptedBackend(t testing.TB) *scriptedBackend {
	t.Helper()
	b := &scriptedBackend{
		backend: &backend{addr: fmt.Sprintf("127.0.0.1:%d", testcaddy.FreePort(t))},
		script:  make(map[string][]string),
		served:  make(chan string, 100),
	}
	ln, err := net.Listen("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(b.serve)}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return b
}

// plan sets the behaviours of the next deliveries of upload id.
func (b *scriptedBackend) plan(id string, behaviours ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.script[id] = behaviours
}

func (b *scriptedBackend) serve(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("X-Upload-Id")
	b.mu.Lock()
	behaviour := "ok"
	if s := b.script[id]; len(s) > 0 {
		behaviour, b.script[id] = s[0], s[1:]
	}
	b.mu.Unlock()
	defer func() { b.served <- id + " " + behaviour }()

	if behaviour == "early" {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"early":true}`)
		return
	}
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		return
	}
	switch behaviour {
	case "reset", "truncate":
		if behaviour == "truncate" {
			w.Header().Set("Content-Length", "1000")
			w.Header().Set("Set-Cookie", "backend_session=secret")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, `{"partial"`)
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.(*net.TCPConn).SetLinger(0)
			_ = conn.Close()
		}
		return
	}
	d := delivery{method: r.Method, path: r.URL.Path, header: r.Header.Clone(), bytes: n, sha256: hex.EncodeToString(h.Sum(nil))}
	b.backend.mu.Lock()
	b.deliveries = append(b.deliveries, d)
	b.backend.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Set-Cookie", "backend_session=secret")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"sha256":%q,"bytes":%d}`, d.sha256, n)
}

// awaitServed waits until the backend has served each of want ("<id>
// <behaviour>"), in any order.
func (b *scriptedBackend) awaitServed(t testing.TB, want ...string) {
	t.Helper()
	left := make(map[string]int)
	for _, w := range want {
		left[w]++
	}
	timeout := time.After(30 * time.Second)
	for len(left) > 0 {
		select {
		case got := <-b.served:
			if left[got]--; left[got] <= 0 {
				delete(left, got)
			}
		case <-timeout:
			t.Fatalf("the backend did not serve %v", left)
		}
	}
}

// assertRetryLater checks the answer to the request that carried the
// last byte while the delivery is retried: 503, Retry-After, JSON.
func assertRetryLater(t testing.TB, what string, resp *http.Response, body string) {
	t.Helper()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("%s: %d %v %s, want 503 with Retry-After", what, resp.StatusCode, resp.Header, body)
	}
	assertJSONError(t, what, body, "retried in the background")
}

// A backend resets the first delivery, then on each retry sends 200
// headers and drops the connection mid-answer (reverse_proxy panics
// with http.ErrAbortHandler, in a goroutine of the package): the
// process stays up (Caddy runs in this test's process), each broken
// answer counts as a transient failure, and across a restart with the
// deliveries pending, one upload is delivered on a later good attempt
// and the other fails once its retries are spent.
func TestBrokenAnswersInBackgroundRetriesAcrossARestart(t *testing.T) {
	back := newScriptedBackend(t)
	p := startProxy(t, back.backend, "deliver_retries 3")
	good, bad := payload(1<<20), payload(1<<19)
	goodPath, badPath := p.create(t, len(good), ""), p.create(t, len(bad), "")
	goodID, badID := idOf(goodPath), idOf(badPath)
	back.plan(goodID, "reset", "truncate", "truncate", "ok")
	back.plan(badID, "reset", "truncate", "truncate", "truncate")

	resp, body := p.patch(t, goodPath, 0, good)
	assertRetryLater(t, "final PATCH, the first delivery reset", resp, body)
	resp, body = p.patch(t, badPath, 0, bad)
	assertRetryLater(t, "final PATCH, the first delivery reset", resp, body)

	// the first retries break mid-answer; the second ones come, so the
	// process lived through the first
	back.awaitServed(t, goodID+" reset", badID+" reset", goodID+" truncate", badID+" truncate",
		goodID+" truncate", badID+" truncate")
	for _, path := range []string{goodPath, badPath} {
		if resp, _ := p.tusRequest(t, http.MethodHead, path, nil, nil); resp.StatusCode != http.StatusLocked {
			t.Fatalf("HEAD while the delivery is pending: %d, want 423", resp.StatusCode)
		}
	}

	p.restart(t) // the deliveries are pending; the first request brings their route
	s := p.waitStatus(t, goodID, "complete", func(s caddyprogress.Status) bool { return s.Status == "complete" })
	if s.Resumable.Delivery != "delivered" || s.Resumable.Attempts != 4 || *s.UpstreamStatus != http.StatusCreated {
		t.Fatalf("the upload whose last attempt was good: %+v %+v", s, s.Resumable)
	}
	assertDeliveredOnce(t, back.backend, good)
	s = p.waitStatus(t, badID, "error", func(s caddyprogress.Status) bool { return s.Status == "error" })
	if s.Resumable.Delivery != "failed" || s.Resumable.Attempts != 4 || *s.UpstreamStatus != http.StatusBadGateway {
		t.Fatalf("the upload whose every attempt broke: %+v %+v", s, s.Resumable)
	}
	if resp, _ := p.tusRequest(t, http.MethodHead, goodPath, nil, nil); resp.StatusCode != http.StatusOK || resp.Header.Get("Upload-Offset") != fmt.Sprint(len(good)) {
		t.Fatalf("HEAD of the delivered upload: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, _ := p.tusRequest(t, http.MethodHead, badPath, nil, nil); resp.StatusCode != http.StatusGone {
		t.Fatalf("HEAD of the failed upload: %d, want 410", resp.StatusCode)
	}
}

// A backend that always breaks its answer off mid-body: the request that
// carried the last byte gets 503 with Retry-After (not a dropped
// connection), the claim is released, and once the retries are spent
// the upload is failed (HEAD 410), never left delivering (423).
func TestBrokenAnswerInTheForegroundIsAnsweredAndReleased(t *testing.T) {
	back := newScriptedBackend(t)
	p := startProxy(t, back.backend, "deliver_retries 1")
	data := payload(1 << 20)
	path := p.create(t, len(data), "")
	id := idOf(path)
	back.plan(id, "truncate", "truncate")

	resp, body := p.patch(t, path, 0, data)
	assertRetryLater(t, "final PATCH, the answer broken off", resp, body)
	s := p.waitStatus(t, id, "error", func(s caddyprogress.Status) bool { return s.Status == "error" })
	if s.Resumable.Delivery != "failed" || s.Resumable.Attempts != 2 {
		t.Fatalf("status after the retries: %+v %+v", s, s.Resumable)
	}
	if resp, _ := p.tusRequest(t, http.MethodHead, path, nil, nil); resp.StatusCode != http.StatusGone {
		t.Fatalf("HEAD after the retries: %d, want 410", resp.StatusCode)
	}
	if len(back.got()) != 0 {
		t.Fatalf("the backend completed %d deliveries, want none", len(back.got()))
	}
}

// A backend that answers 200 before it read the whole delivery has not
// taken the file: the upload is error with the plain path's phrase,
// the client gets a 502 (never the 200), and HEAD says 410.
func TestDeliveryAnsweredBeforeTheBodyEndedIsAnError(t *testing.T) {
	back := newScriptedBackend(t)
	p := startProxy(t, back.backend, "")
	data := payload(16 << 20) // more than the sockets hold
	path := p.create(t, len(data), "")
	id := idOf(path)
	back.plan(id, "early")

	resp, body := p.patch(t, path, 0, data)
	if resp.StatusCode != http.StatusBadGateway || strings.Contains(body, "early") {
		t.Fatalf("final PATCH answered early by the backend: %d %s, want 502", resp.StatusCode, body)
	}
	assertJSONError(t, "final PATCH answered early by the backend", body, "before it read the whole upload")
	s := p.waitStatus(t, id, "error", func(s caddyprogress.Status) bool { return s.Status == "error" })
	if s.Error != "upstream answered before the body ended" || *s.UpstreamStatus != http.StatusOK ||
		s.Resumable.Delivery != "failed" || s.Resumable.Attempts != 1 {
		t.Fatalf("status: %+v %+v", s, s.Resumable)
	}
	if resp, _ := p.tusRequest(t, http.MethodHead, path, nil, nil); resp.StatusCode != http.StatusGone {
		t.Fatalf("HEAD: %d, want 410", resp.StatusCode)
	}
}
