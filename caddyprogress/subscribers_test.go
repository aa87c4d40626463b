package caddyprogress

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// openStreams counts the event streams the named tracker serves.
func openStreams(name string) int {
	t := liveTracker(name)
	if t == nil {
		return 0
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.subscribers.total
}

func TestSubscriberCapsAnswer503(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "tracker capped\n\t\tmax_subscribers 3\n\t\tmax_subscribers_per_upload 2", up.host)
	refused := func(path string) {
		t.Helper()
		resp, err := p.client.Get(p.base + path)
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		body.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(body.String(), `"error":"cannot open an event stream: too many`) {
			t.Fatalf("%s: %d, Retry-After %q, %s; want 503 with Retry-After and a JSON error", path, resp.StatusCode, resp.Header.Get("Retry-After"), body.String())
		}
	}
	p.subscribe(t, "one").next(t, 5*time.Second)
	p.subscribe(t, "one").next(t, 5*time.Second)
	refused(DefaultEventsPath + "one") // a third for one upload
	subscribeURL(t, p.client, p.base+DefaultEventsPath+"?group=g").next(t, 5*time.Second)
	refused(DefaultEventsPath + "two") // a fourth for the tracker
	refused(DefaultEventsPath + "?group=g")
	if n := openStreams("capped"); n != 3 {
		t.Fatalf("%d streams counted, want 3", n)
	}
}

// A subscriber that stops reading is dropped after the write timeout,
// while the upload and another subscriber carry on.
func TestStuckSubscriberIsDropped(t *testing.T) {
	saved := eventWriteTimeout
	eventWriteTimeout = 500 * time.Millisecond
	t.Cleanup(func() { eventWriteTimeout = saved }) // after Caddy stopped
	up := newUpstream(t)
	p := startProxy(t, "tracker stuck\n\t\tinterval 10ms", up.host)
	const id = "big-form"

	host := strings.TrimPrefix(p.base, "http://")
	stuck, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	fmt.Fprintf(stuck, "GET %s%s HTTP/1.1\r\nHost: %s\r\n\r\n", DefaultEventsPath, id, host)
	line, err := bufio.NewReader(stuck).ReadString('\n') // then never read again
	if err != nil || !strings.Contains(line, "200") || openStreams("stuck") != 1 {
		t.Fatalf("stuck subscriber's answer %q (%v), %d streams", line, err, openStreams("stuck"))
	}
	reading := p.subscribe(t, id)
	reading.next(t, 5*time.Second) // pending
	if n := openStreams("stuck"); n != 2 {
		t.Fatalf("%d streams counted, want 2", n)
	}

	body := largeForm(t, curlBoundary) // each event is over half a megabyte
	paced := &pacedReader{data: body, chunk: 4 << 10, pause: 10 * time.Millisecond}
	var wg sync.WaitGroup
	wg.Go(func() {
		resp, _ := p.upload(t, http.MethodPost, "/", paced, int64(len(body)), formHeader(id, curlBoundary))
		if resp.StatusCode != 200 {
			t.Errorf("upload answered %d", resp.StatusCode)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for openStreams("stuck") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d streams open 10s into the upload; want the stuck one dropped", openStreams("stuck"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, s := p.getStatus(t, id); s.Status != "uploading" {
		t.Fatalf("the stuck stream ended with the upload %s; want it dropped mid-upload", s.Status)
	}
	wg.Wait()
	events := reading.all(t, 10*time.Second)
	if last := events[len(events)-1]; last.name != "complete" || len(last.status(t).Files) != maxParts {
		t.Fatalf("reading subscriber's last event %q with %d files", last.name, len(last.status(t).Files))
	}
	if got, _ := up.get(id); got.sha256 != sha256Hex(body) {
		t.Fatalf("the upload did not reach the upstream intact")
	}
	if n := openStreams("stuck"); n != 0 {
		t.Fatalf("%d streams counted after both ended", n)
	}
}
