package caddyprogress

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestEventsHeaders(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "wait 200ms", up.host)
	s := p.subscribe(t, "headers")
	h := s.resp.Header
	if h.Get("Content-Type") != "text/event-stream" || h.Get("Cache-Control") != "no-store" || h.Get("X-Accel-Buffering") != "no" {
		t.Fatalf("event stream headers: %v", h)
	}
	s.all(t, 5*time.Second)
}

func TestSubscriberBeforeUploadStarts(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "", up.host)
	s := p.subscribe(t, "early")
	pending := s.next(t, 5*time.Second)
	if pending.name != "pending" || pending.status(t).Status != "pending" || pending.status(t).ID != "early" {
		t.Fatalf("first event = %+v, want pending", pending)
	}
	time.Sleep(300 * time.Millisecond) // subscribed well before the upload
	data := payload(1 << 20)
	p.upload(t, http.MethodPost, "/", strings.NewReader(string(data)), int64(len(data)), http.Header{"X-Upload-Id": {"early"}})
	events := s.all(t, 10*time.Second)
	if len(events) < 2 || events[0].name != "" {
		t.Fatalf("after pending got %+v, want progress then complete", events)
	}
	last := events[len(events)-1]
	if last.name != "complete" || last.status(t).Received != 1<<20 {
		t.Fatalf("last event = %+v", last)
	}
}

func TestSubscriberAfterUploadFinished(t *testing.T) {
	up := newUpstream(t)
	up.status = http.StatusTeapot
	p := startProxy(t, "", up.host)
	p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {"late"}})
	p.waitForStatus(t, "late", "error")
	events := p.subscribe(t, "late").all(t, 5*time.Second)
	if len(events) != 1 || events[0].name != "error" {
		t.Fatalf("events for a finished upload = %+v, want one error event", events)
	}
	if s := events[0].status(t); s.UpstreamStatus == nil || *s.UpstreamStatus != http.StatusTeapot {
		t.Fatalf("final event = %+v", s)
	}
}

func TestSubscriberGivesUpAfterWait(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "wait 300ms", up.host)
	start := time.Now()
	events := p.subscribe(t, "never").all(t, 10*time.Second)
	if len(events) != 2 || events[0].name != "pending" || events[1].name != "error" {
		t.Fatalf("events = %+v, want pending then error", events)
	}
	if s := events[1].status(t); s.Status != "unknown" || s.ID != "never" {
		t.Fatalf("error event = %+v, want status unknown", s)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Fatalf("gave up after %s, before wait", waited)
	}
}

func TestAbortedUploadEndsEventsWithAborted(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "", up.host)
	s := p.subscribe(t, "gone")
	s.next(t, 5*time.Second) // pending
	body := &pacedReader{data: payload(4 << 20), chunk: 64 << 10, stopAt: 1 << 20, release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.base+"/", body)
	req.ContentLength = 4 << 20
	req.Header.Set("X-Upload-ID", "gone")
	done := make(chan error, 1)
	go func() {
		_, err := (&http.Transport{}).RoundTrip(req)
		done <- err
	}()
	p.waitFor(t, "gone", "1 MiB received", func(_ int, s Status) bool { return s.Received == 1<<20 })
	cancel() // the client goes away: its connection is closed
	events := s.all(t, 10*time.Second)
	last := events[len(events)-1]
	if last.name != "aborted" || last.status(t).Error == "" {
		t.Fatalf("last event = %+v, want aborted with an error", last)
	}
	close(body.release)
	<-done
}
