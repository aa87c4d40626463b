package redistracker

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

func TestLeaseRenewedWhileTheUploadRuns(t *testing.T) {
	srv := testredis.Start(t)
	const lease = 600 * time.Millisecond
	a := newTestTracker(t, srv, Config{Instance: "a", Lease: lease})
	b := newTestTracker(t, srv, Config{Instance: "b", Lease: lease})
	if _, err := a.Claim(bg(), "long", "", progress.StateUploading, progressDoc("long", progress.StateUploading, 0)); err != nil {
		t.Fatal(err)
	}
	// no document for five leases: the renewal alone keeps it alive
	time.Sleep(5 * lease)
	d, err := b.Lookup(bg(), "long")
	if err != nil || d.State != progress.StateUploading {
		t.Fatalf("after five leases: %+v, %v", d, err)
	}
	if a.Stats().Aborted+b.Stats().Aborted != 0 {
		t.Fatal("a live upload was aborted")
	}
}

func TestLostInstanceUploadsEndAbortedOnceWithinTheLease(t *testing.T) {
	srv := testredis.Start(t)
	const lease = 800 * time.Millisecond
	a := newTestTracker(t, srv, Config{Instance: "a", Lease: lease})
	b := newTestTracker(t, srv, Config{Instance: "b", Lease: lease})
	c := newTestTracker(t, srv, Config{Instance: "c", Lease: lease})

	subB := subscribed(t, b, "lost1")
	subC, err := c.SubscribeGroup(bg(), "grp")
	if err != nil {
		t.Fatal(err)
	}
	defer subC.Close()
	u := claimed(t, a, "lost1", "grp")
	time.Sleep(150 * time.Millisecond)
	u.Publish(progress.StateUploading, progressDoc("lost1", progress.StateUploading, 4096))
	waitFor(t, time.Second, "the progress on b", func() bool {
		d, err := b.Lookup(bg(), "lost1")
		return err == nil && string(d.JSON) == string(progressDoc("lost1", progress.StateUploading, 4096))
	})
	_ = a.shutdown() // the instance dies: no final document, no renewal
	died := time.Now()

	var pendingB []Doc
	var final Doc
	for {
		d := next(t, subB, &pendingB, 3*lease)
		if d.Final() {
			final = d
			break
		}
	}
	took := time.Since(died)
	if took > lease+a.scanEvery()+500*time.Millisecond {
		t.Fatalf("aborted %v after the instance died; the lease is %v", took, lease)
	}
	if final.State != progress.StateAborted {
		t.Fatalf("final state %q", final.State)
	}
	var doc struct {
		ID       string `json:"id"`
		Status   string `json:"status"`
		Error    string `json:"error"`
		Received int    `json:"received"`
	}
	if err := json.Unmarshal(final.JSON, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Status != "aborted" || doc.Error != "instance lost" || doc.Received != 4096 || doc.ID != "lost1" {
		t.Fatalf("final document: %s", final.JSON)
	}
	// exactly once: two instances scan, one aborts
	time.Sleep(3 * a.scanEvery())
	for _, d := range append(pendingB, subB.Take()...) {
		t.Fatalf("another document after the final one: %+v", d)
	}
	if n := b.Stats().Aborted + c.Stats().Aborted; n != 1 {
		t.Fatalf("aborted %d times", n)
	}
	finalsC := 0
	for _, d := range subC.Take() {
		if d.Final() {
			finalsC++
		}
	}
	if finalsC != 1 {
		t.Fatalf("group subscriber on c saw %d final documents", finalsC)
	}
	docs, err := c.LookupGroup(bg(), "grp")
	if err != nil || len(docs) != 1 || docs[0].State != progress.StateAborted {
		t.Fatalf("group after the abort: %+v, %v", docs, err)
	}
	if live, _, err := b.Count(bg()); err != nil || live != 0 {
		t.Fatalf("still %d live, %v", live, err)
	}
	// the ID is free again
	if _, err := b.Claim(bg(), "lost1", "", progress.StateUploading, nil); err != nil {
		t.Fatalf("claim after the abort: %v", err)
	}
}

func TestManyUploadsOfALostInstanceEndInOneScan(t *testing.T) {
	srv := testredis.Start(t)
	const lease = 600 * time.Millisecond
	const uploads = 3*expiredBatch + 7
	a := newTestTracker(t, srv, Config{Instance: "a", Lease: lease})
	b := newTestTracker(t, srv, Config{Instance: "b", Lease: lease})
	for i := range uploads {
		id := fmt.Sprintf("many-%03d", i)
		if _, err := a.Claim(bg(), id, "", progress.StateUploading, progressDoc(id, progress.StateUploading, i)); err != nil {
			t.Fatal(err)
		}
	}
	// b follows one of them (as a status or events route would): an
	// instance that neither runs nor follows an upload does not scan
	_ = subscribed(t, b, "many-000")
	a.flush()
	_ = a.shutdown()
	died := time.Now()
	waitFor(t, lease+3*time.Second, "every upload aborted", func() bool {
		return b.Stats().Aborted == uploads
	})
	if took := time.Since(died); took > lease+b.scanEvery()+500*time.Millisecond {
		t.Fatalf("%d uploads aborted %v after their instance died (lease %v)", uploads, took, lease)
	}
	d, err := b.Lookup(bg(), "many-123")
	if err != nil || d.State != progress.StateAborted || !strings.Contains(string(d.JSON), `"received":123`) {
		t.Fatalf("one of them: %+v %s, %v", d, d.JSON, err)
	}
}

// A lease renewal of an upload nobody watches stores its current
// document (SetCurrent), unpublished, so that another instance's lookup,
// and the "instance lost" document if its instance dies, are as old as
// the last renewal, not as the claim; a watched upload's renewal
// leaves the document to the publisher.
func TestRenewalStoresTheDocumentOfAnUploadNobodyWatches(t *testing.T) {
	srv := testredis.Start(t)
	const lease = 600 * time.Millisecond
	a := newTestTracker(t, srv, Config{Instance: "a", Lease: lease})
	b := newTestTracker(t, srv, Config{Instance: "b", Lease: lease})
	sub := subscribed(t, b, "quiet")
	u := claimed(t, a, "quiet", "")
	var received atomic.Int64
	u.SetCurrent(func() (State, []byte) {
		return progress.StateProcessing, progressDoc("quiet", progress.StateProcessing, int(received.Load()))
	})
	received.Store(700)
	waitFor(t, 2*lease, "a renewal to store the current document", func() bool {
		d, err := b.Lookup(bg(), "quiet")
		return err == nil && d.State == progress.StateProcessing && string(d.JSON) == string(progressDoc("quiet", progress.StateProcessing, 700))
	})
	if got := sub.Take(); len(got) != 0 || a.Stats().Published != 0 {
		t.Fatalf("a renewal published: %d documents reached b, %d published", len(got), a.Stats().Published)
	}
	_ = a.shutdown() // the instance dies
	var pending []Doc
	final := next(t, sub, &pending, 3*lease)
	for !final.Final() {
		final = next(t, sub, &pending, 3*lease)
	}
	var doc struct{ Received int }
	if err := json.Unmarshal(final.JSON, &doc); err != nil || final.State != progress.StateAborted || doc.Received != 700 {
		t.Fatalf("instance lost: %+v %s, %v; want aborted at 700 bytes", final, final.JSON, err)
	}
}
