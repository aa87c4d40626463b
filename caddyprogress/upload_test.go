package caddyprogress

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// watchedUpload sends a paced upload of size bytes through p with id,
// polling its status and following its events meanwhile, and checks
// everything the contract promises along the way.
func watchedUpload(t *testing.T, p *proxy, up *upstream, id string, size int, chunked bool, wantProto int) {
	data := payload(size)
	body := &pacedReader{data: data, chunk: 256 << 10, pause: 5 * time.Millisecond}
	events := p.subscribe(t, id)
	if first := events.next(t, 5*time.Second); first.name != "pending" {
		t.Fatalf("first event before the upload = %q, want pending", first.name)
	}

	// poll while uploading: received grows and never passes what was sent
	stopPolling := make(chan struct{})
	var polls []Status
	var pollErr string
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stopPolling:
				return
			case <-time.After(20 * time.Millisecond):
			}
			code, s := p.getStatus(t, id)
			sent := body.sent.Load()
			if code == http.StatusNotFound {
				continue // not started yet
			}
			if s.Received > sent {
				pollErr = fmt.Sprintf("poll saw received %d > %d bytes sent", s.Received, sent)
			}
			polls = append(polls, s)
		}
	})

	contentLength := int64(size)
	if chunked {
		contentLength = -1
	}
	start := time.Now()
	resp, respBody := p.upload(t, http.MethodPost, "/upload", body, contentLength, http.Header{"X-Upload-Id": {id}})
	elapsed := time.Since(start)
	close(stopPolling)
	wg.Wait()

	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upload answered %d: %s", resp.StatusCode, respBody)
	}
	if resp.ProtoMajor != wantProto {
		t.Fatalf("upload went over HTTP/%d, want HTTP/%d", resp.ProtoMajor, wantProto)
	}
	if got := resp.Header.Get("X-Upload-ID"); got != id {
		t.Fatalf("response X-Upload-ID = %q, want %q", got, id)
	}
	got, ok := up.get(id)
	if !ok {
		t.Fatalf("upstream never got upload %s", id)
	}
	if got.bytes != int64(size) || got.sha256 != sha256Hex(data) {
		t.Fatalf("upstream got %d bytes with SHA-256 %s, want %d bytes with %s", got.bytes, got.sha256, size, sha256Hex(data))
	}

	if pollErr != "" {
		t.Fatal(pollErr)
	}
	var growing int
	for i, s := range polls {
		if i > 0 && s.Received < polls[i-1].Received {
			t.Fatalf("poll %d: received went down from %d to %d", i, polls[i-1].Received, s.Received)
		}
		if i > 0 && s.Received > polls[i-1].Received && s.Status == "uploading" {
			growing++
		}
		if chunked && (s.Total != nil || s.Percent != nil || s.Remaining != nil) {
			t.Fatalf("chunked upload: poll shows total %v percent %v remaining %v, want null", s.Total, s.Percent, s.Remaining)
		}
		if !chunked && (s.Total == nil || *s.Total != int64(size)) {
			t.Fatalf("poll shows total %v, want %d", s.Total, size)
		}
	}
	if growing < 3 {
		t.Fatalf("only %d of %d polls saw received grow while uploading", growing, len(polls))
	}

	// events: ordered progress at most about one per interval, then
	// exactly one complete event, then the end of the stream
	all := events.all(t, 10*time.Second)
	if events.retry != "1000" {
		t.Fatalf("retry = %q, want 1000", events.retry)
	}
	var progress []sseEvent
	for i, ev := range all {
		if ev.name == "" {
			progress = append(progress, ev)
			continue
		}
		if i != len(all)-1 {
			t.Fatalf("event %d is %q, but it is not the last", i, ev.name)
		}
	}
	last := all[len(all)-1]
	if last.name != "complete" {
		t.Fatalf("last event = %q, want complete", last.name)
	}
	final := last.status(t)
	if final.Status != "complete" || final.Received != int64(size) || final.UpstreamStatus == nil || *final.UpstreamStatus != 200 || final.FinishedAt == nil {
		t.Fatalf("final event = %+v", final)
	}
	if len(progress) < 3 {
		t.Fatalf("got %d progress events over %s, want several", len(progress), elapsed)
	}
	var prev int64 = -1
	for i, ev := range progress {
		s := ev.status(t)
		if s.Received <= prev {
			t.Fatalf("progress event %d: received %d after %d", i, s.Received, prev)
		}
		if ev.id != strconv.FormatInt(s.Received, 10) {
			t.Fatalf("progress event %d: id %q, received %d", i, ev.id, s.Received)
		}
		prev = s.Received
	}
	// at most about one per interval (100ms): allow for the first event,
	// the final one and timer slack
	if maxEvents := int(elapsed/(100*time.Millisecond)) + 3; len(progress) > maxEvents {
		t.Fatalf("%d progress events in %s: more than about one per 100ms", len(progress), elapsed)
	}

	code, s := p.getStatus(t, id)
	if code != http.StatusOK || s.Status != "complete" || s.Received != int64(size) {
		t.Fatalf("status after the upload: %d %+v", code, s)
	}
}

func TestLargeUploadArrivesIntactWithProgress(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "", up.host)
	watchedUpload(t, p, up, "large-h1", 50<<20, false, 1)
}

func TestChunkedUploadHasNoTotal(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "", up.host)
	watchedUpload(t, p, up, "large-chunked", 20<<20, true, 1)
}

func TestHTTP2UploadOverTLS(t *testing.T) {
	up := newUpstream(t)
	port := testcaddy.FreePort(t)
	site := fmt.Sprintf("https://127.0.0.1:%d", port)
	testcaddy.Run(t, testcaddy.GlobalOptions+siteBlock(site, "", up.host))
	p := &proxy{base: site, client: h2Client()}
	watchedUpload(t, p, up, "large-h2", 50<<20, false, 2)
	watchedUpload(t, p, up, "chunked-h2", 10<<20, true, 2)
}

func TestH2CUpload(t *testing.T) {
	up := newUpstream(t)
	port := testcaddy.FreePort(t)
	site := fmt.Sprintf("http://127.0.0.1:%d", port)
	testcaddy.Run(t, strings.Replace(testcaddy.GlobalOptions, "admin off", "admin off\n\tservers {\n\t\tprotocols h1 h2c\n\t}", 1)+siteBlock(site, "", up.host))
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	p := &proxy{base: site, client: &http.Client{Transport: &http.Transport{Protocols: &protocols}}}
	watchedUpload(t, p, up, "h2c", 10<<20, false, 2)
}

func TestProcessingWhileUpstreamAnswers(t *testing.T) {
	up := newUpstream(t)
	up.delay = 1500 * time.Millisecond
	p := startProxy(t, "", up.host)
	data := payload(1 << 20)
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.upload(t, http.MethodPut, "/", strings.NewReader(string(data)), int64(len(data)), http.Header{"X-Upload-Id": {"slow-answer"}})
	}()
	s := p.waitForStatus(t, "slow-answer", "processing")
	if s.Received != int64(len(data)) || *s.Percent != 100 || s.FinishedAt != nil || s.UpstreamStatus != nil {
		t.Fatalf("processing status = %+v", s)
	}
	<-done
	s = p.waitForStatus(t, "slow-answer", "complete")
	if *s.UpstreamStatus != 200 {
		t.Fatalf("upstream_status = %d, want 200", *s.UpstreamStatus)
	}
}

func TestUpstreamErrorStatus(t *testing.T) {
	up := newUpstream(t)
	up.status = http.StatusInternalServerError
	p := startProxy(t, "", up.host)
	resp, _ := p.upload(t, http.MethodPost, "/", strings.NewReader("hello"), 5, http.Header{"X-Upload-Id": {"fails"}})
	if resp.StatusCode != 500 {
		t.Fatalf("upload answered %d, want 500", resp.StatusCode)
	}
	s := p.waitForStatus(t, "fails", "error")
	if s.UpstreamStatus == nil || *s.UpstreamStatus != 500 || !strings.Contains(s.Error, "500") {
		t.Fatalf("status = %+v, want upstream_status 500 and an error", s)
	}
}

func TestRequestBodyLimitIs413(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "", up.host, "\trequest_body {\n\t\tmax_size 1MB\n\t}")
	// a little over the limit, so the server drains the rest and the
	// client reads the answer instead of a reset connection
	data := payload(1_100_000)
	resp, _ := p.upload(t, http.MethodPost, "/", &pacedReader{data: data, chunk: 64 << 10}, -1, http.Header{"X-Upload-Id": {"too-big"}})
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("upload answered %d, want 413", resp.StatusCode)
	}
	s := p.waitForStatus(t, "too-big", "error")
	if s.UpstreamStatus == nil || *s.UpstreamStatus != 413 || s.Error == "" {
		t.Fatalf("status = %+v, want upstream_status 413 and an error", s)
	}
	if s.Received > int64(len(data)) {
		t.Fatalf("received %d > %d sent", s.Received, len(data))
	}
}

func TestUpstreamDownIs502(t *testing.T) {
	down := fmt.Sprintf("127.0.0.1:%d", testcaddy.FreePort(t))
	p := startProxy(t, "", down)
	resp, _ := p.upload(t, http.MethodPost, "/", strings.NewReader("hello"), 5, http.Header{"X-Upload-Id": {"no-upstream"}})
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("upload answered %d, want 502", resp.StatusCode)
	}
	s := p.waitForStatus(t, "no-upstream", "error")
	if s.UpstreamStatus == nil || *s.UpstreamStatus != 502 || s.Error == "" {
		t.Fatalf("status = %+v, want upstream_status 502 and an error", s)
	}
}

func TestClientDropIsAborted(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "", up.host)
	conn, err := net.Dial("tcp", strings.TrimPrefix(p.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(conn)
	fmt.Fprintf(w, "POST /upload HTTP/1.1\r\nHost: %s\r\nX-Upload-ID: dropped\r\nContent-Length: %d\r\n\r\n", conn.RemoteAddr(), 10<<20)
	w.Write(payload(1 << 20))
	w.Flush()
	p.waitFor(t, "dropped", "1 MiB received", func(_ int, s Status) bool { return s.Received == 1<<20 })
	conn.Close()
	s := p.waitForStatus(t, "dropped", "aborted")
	if s.Received != 1<<20 || s.Error == "" || s.FinishedAt == nil {
		t.Fatalf("aborted status = %+v", s)
	}
}
