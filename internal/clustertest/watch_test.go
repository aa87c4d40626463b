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

// An event stream through B renews its watch while it lasts: an upload
// through A longer than one watch period (10 s) still sends B its
// progress at the end, not only its final state.
func TestLongStreamThroughBKeepsItsWatch(t *testing.T) {
	t.Parallel() // mostly waiting (see the package doc)
	if testing.Short() {
		t.Skip("13 s")
	}
	a, b, _, _ := twoInstances(t, "")
	const id, chunks, chunk = "long-1", 13, 16 << 10
	stream := b.subscribe(t, "/upload/events/"+id) // before it starts
	body := &steppedReader{next: make(chan struct{})}
	done := a.uploadAsync(id, body, -1, nil)
	for range chunks {
		body.next <- struct{}{}
		time.Sleep(time.Second)
	}
	close(body.next)
	if r := <-done; r.code != http.StatusOK {
		t.Fatalf("upload: %+v", r)
	}
	events := stream.all(t, 10*time.Second)
	final := checkStream(t, events, "complete")
	if final.Received != chunks*chunk {
		t.Fatalf("final event: received %d, want %d", final.Received, chunks*chunk)
	}
	seen := map[int64]bool{}
	for _, ev := range events {
		if ev.name == "" {
			seen[ev.status(t).Received] = true
		}
	}
	// one value a second; without the renewal, none after the 10th
	if len(seen) < chunks-1 || !seen[(chunks-1)*chunk] {
		t.Fatalf("B's stream showed %d progress values (%v), want one per second to the end", len(seen), seen)
	}
}
