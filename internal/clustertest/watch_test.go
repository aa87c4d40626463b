package clustertest

import (
	"net/http"
	"testing"
	"time"
)

// An upload that no other instance follows publishes no progress
// through Redis; the first status poll through B watches it, and its
// answer is the upload's current progress, not what its claim stored;
// from then on B follows it as before.
func TestFirstPollThroughBIsCurrent(t *testing.T) {
	rs := startRedis(t)
	up := newUpstream(t)
	a := startInstance(t, "A", rs.URL(), "", up.host)
	b := startInstance(t, "B", rs.URL(), "", up.host)
	body := &steppedReader{next: make(chan struct{})}
	const id = "fresh-1"
	done := a.uploadAsync(id, body, -1, nil)
	ended := false
	defer func() { // on failure: the upload ends before the instances stop
		if !ended {
			close(body.next)
			<-done
		}
	}()
	const chunk = 16 << 10
	sent := int64(0)
	for range 4 {
		body.next <- struct{}{}
		sent += chunk
	}
	a.waitFor(t, id, 5*time.Second, "A to count the first chunks", func(code int, s status) bool {
		return code == http.StatusOK && s.Received == sent
	})
	time.Sleep(300 * time.Millisecond) // three intervals
	if n := counter(t, []*instance{a}, "published_total"); n != 0 {
		t.Fatalf("A published %d documents of an upload nobody follows elsewhere", n)
	}

	code, s := b.status(t, id)
	if code != http.StatusOK || s.Status != "uploading" || s.Received != sent {
		t.Fatalf("first poll through B: %d %+v; want uploading, %d bytes received", code, s, sent)
	}
	body.next <- struct{}{}
	sent += chunk
	b.waitFor(t, id, 2*time.Second, "B to show the next chunk", func(code int, s status) bool {
		return code == http.StatusOK && s.Received == sent
	})
	close(body.next)
	ended = true
	if r := <-done; r.code != http.StatusOK {
		t.Fatalf("upload: %+v", r)
	}
	b.waitFor(t, id, 2*time.Second, "B to show the end", func(code int, s status) bool {
		return code == http.StatusOK && s.Status == "complete" && s.Received == sent
	})
}
