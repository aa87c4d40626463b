package caddyprogress

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

func TestFinishedRecordsVanishAfterRetain(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "retain 1s", up.host)
	p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {"short-lived"}})
	s := p.waitForStatus(t, "short-lived", "complete")
	finished := time.Now()
	p.waitFor(t, "short-lived", "the record to vanish", func(code int, s Status) bool {
		return code == http.StatusNotFound && s.Status == "unknown"
	})
	// removed retain after it finished, within a second (with slack for a busy machine)
	if gone := time.Since(finished); gone < 500*time.Millisecond || gone > 3*time.Second {
		t.Fatalf("record of %+v vanished %s after it finished, want about 1s", s, gone)
	}
}

func TestMaxUploadsEvictsFinishedFirst(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "max_uploads 2", up.host)
	for _, id := range []string{"first", "second", "third"} {
		p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {id}})
		p.waitForStatus(t, id, "complete")
	}
	if code, _ := p.getStatus(t, "first"); code != http.StatusNotFound {
		t.Fatalf("oldest finished record still there (%d) in a tracker of 2", code)
	}
	for _, id := range []string{"second", "third"} {
		if code, _ := p.getStatus(t, id); code != 200 {
			t.Fatalf("record %s answered %d, want 200", id, code)
		}
	}
}

func TestMaxUploadsFailsOpen(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "max_uploads 2", up.host)
	var inFlight []*pacedReader
	var wg sync.WaitGroup
	for _, id := range []string{"busy1", "busy2"} {
		body := &pacedReader{data: payload(2 << 20), chunk: 64 << 10, stopAt: 1 << 20, release: make(chan struct{})}
		inFlight = append(inFlight, body)
		wg.Go(func() { p.upload(t, http.MethodPost, "/", body, 2<<20, http.Header{"X-Upload-Id": {id}}) })
		p.waitForStatus(t, id, "uploading")
	}

	data := payload(3 << 20)
	resp, _ := p.upload(t, http.MethodPost, "/", strings.NewReader(string(data)), int64(len(data)), http.Header{"X-Upload-Id": {"overflow"}})
	if resp.StatusCode != 200 {
		t.Fatalf("upload past max_uploads answered %d; tracking must never fail an upload", resp.StatusCode)
	}
	if h := resp.Header.Get("X-Upload-ID"); h != "" {
		t.Fatalf("untracked upload's response carries X-Upload-ID %q", h)
	}
	if got, ok := up.get("overflow"); !ok || got.sha256 != sha256Hex(data) {
		t.Fatalf("untracked upload did not reach the upstream intact")
	}
	if code, _ := p.getStatus(t, "overflow"); code != http.StatusNotFound {
		t.Fatalf("untracked upload has a record (%d)", code)
	}
	for _, b := range inFlight {
		close(b.release)
	}
	wg.Wait()
	p.waitForStatus(t, "busy1", "complete")
	p.waitForStatus(t, "busy2", "complete")
}

func TestReloadKeepsUploadInFlight(t *testing.T) {
	up := newUpstream(t)
	port := testcaddy.FreePort(t)
	site := fmt.Sprintf("http://127.0.0.1:%d", port)
	testcaddy.Run(t, testcaddy.GlobalOptions+siteBlock(site, "", up.host))
	p := &proxy{base: site, client: &http.Client{}}

	data := payload(4 << 20)
	body := &pacedReader{data: data, chunk: 64 << 10, stopAt: 1 << 20, release: make(chan struct{})}
	release := sync.OnceFunc(func() { close(body.release) })
	t.Cleanup(release) // a failure below must not leave the upload waiting for the next test to trip on
	done := make(chan *http.Response, 1)
	go func() {
		resp, _ := p.upload(t, http.MethodPost, "/", body, int64(len(data)), http.Header{"X-Upload-Id": {"across-reload"}})
		done <- resp
	}()
	p.waitFor(t, "across-reload", "1 MiB received", func(_ int, s Status) bool { return s.Received == 1<<20 })
	events := p.subscribe(t, "across-reload")
	events.next(t, 5*time.Second)

	// a different config, same tracker
	testcaddy.Load(t, testcaddy.GlobalOptions+siteBlock(site, "interval 50ms", up.host))
	// the old config's event streams end, so the reload did not wait on them
	events.all(t, 5*time.Second)

	if _, s := p.getStatus(t, "across-reload"); s.Status != "uploading" || s.Received != 1<<20 {
		t.Fatalf("after the reload the upload reads %+v", s)
	}
	release()
	resp := <-done
	if resp.StatusCode != 200 {
		t.Fatalf("upload across a reload answered %d", resp.StatusCode)
	}
	s := p.waitForStatus(t, "across-reload", "complete")
	if s.Received != int64(len(data)) {
		t.Fatalf("final record %+v", s)
	}
	if got, _ := up.get("across-reload"); got.sha256 != sha256Hex(data) {
		t.Fatalf("upload across a reload arrived altered")
	}
}

func TestStopWithOpenEventStreamsReturnsPromptly(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "wait 1m", up.host)
	var streams []*sseStream
	for i := range 5 {
		s := p.subscribe(t, fmt.Sprintf("waiting-%d", i))
		s.next(t, 5*time.Second) // pending: the stream is open
		streams = append(streams, s)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- caddy.Stop() }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("stopping: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("caddy.Stop did not return with event streams open")
	}
	for _, s := range streams {
		s.all(t, 5*time.Second) // each stream has ended
	}
}
