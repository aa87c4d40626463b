package redistracker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

func TestPublishedDocumentsReachSubscribersOnAnotherInstance(t *testing.T) {
	srv := testredis.Start(t)
	a := newTestTracker(t, srv, Config{Instance: "a"})
	b := newTestTracker(t, srv, Config{Instance: "b"})

	sub, err := b.Subscribe(bg(), "up1")
	if err != nil {
		t.Fatalf("subscribe on b: %v", err)
	}
	defer sub.Close()
	// b follows up1 before it starts, as an event stream does: the
	// upload is watched from its claim
	if err := b.Watch(bg(), "up1"); err != nil {
		t.Fatalf("watch on b: %v", err)
	}
	u := claimed(t, a, "up1", "")
	var pending []Doc
	first := next(t, sub, &pending, 2*time.Second)
	if first.ID != "up1" || first.State != progress.StateUploading || string(first.JSON) != string(progressDoc("up1", progress.StateUploading, 0)) {
		t.Fatalf("first document: %+v %s", first, first.JSON)
	}
	for i := 1; i <= 5; i++ {
		time.Sleep(110 * time.Millisecond) // the core publishes once per interval
		u.Publish(progress.StateUploading, progressDoc("up1", progress.StateUploading, i*100))
	}
	u.Publish(progress.StateComplete, progressDoc("up1", progress.StateComplete, 600))

	lastSeq, lastReceived, finals := first.Seq, -1, 0
	for finals == 0 {
		d := next(t, sub, &pending, 2*time.Second)
		if d.Seq <= lastSeq {
			t.Fatalf("seq went from %d to %d", lastSeq, d.Seq)
		}
		lastSeq = d.Seq
		var st struct{ Received int }
		if err := json.Unmarshal(d.JSON, &st); err != nil {
			t.Fatalf("document %q: %v", d.JSON, err)
		}
		if st.Received < lastReceived {
			t.Fatalf("progress went back from %d to %d", lastReceived, st.Received)
		}
		lastReceived = st.Received
		if d.Final() {
			finals++
			if d.State != progress.StateComplete || st.Received != 600 {
				t.Fatalf("final document: %+v %s", d, d.JSON)
			}
		}
	}
	time.Sleep(300 * time.Millisecond)
	if extra := sub.Take(); len(extra) > 0 {
		t.Fatalf("documents after the final one: %+v", extra)
	}
	got, err := b.Lookup(bg(), "up1")
	if err != nil || got.State != progress.StateComplete || got.Seq != lastSeq {
		t.Fatalf("lookup after the end: %+v, %v (want seq %d)", got, err, lastSeq)
	}
}

func TestPublishCoalescesToOncePerIntervalInOneRoundTrip(t *testing.T) {
	srv := testredis.Start(t)
	a := newTestTracker(t, srv, Config{Instance: "a", Interval: 100 * time.Millisecond})
	b := newTestTracker(t, srv, Config{Instance: "b"})

	const uploads = 20
	var us []*Upload
	for i := range uploads {
		id := "c" + string(rune('a'+i))
		u, err := a.Claim(bg(), id, "", progress.StateUploading, progressDoc(id, progress.StateUploading, 0))
		if err != nil {
			t.Fatal(err)
		}
		us = append(us, u)
	}
	sub := subscribed(t, b, "ca")
	watchAll(t, b, us...)
	time.Sleep(200 * time.Millisecond) // the first documents are out
	before := a.Stats()
	// each upload changes 1,000 times in one second: far more often
	// than the interval
	start := time.Now()
	for i := range 1000 {
		for _, u := range us {
			u.Publish(progress.StateUploading, progressDoc(u.ID(), progress.StateUploading, i))
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	time.Sleep(150 * time.Millisecond)
	after := a.Stats()

	intervals := int(elapsed/(100*time.Millisecond)) + 2
	published := int(after.Published - before.Published)
	if published > uploads*intervals {
		t.Fatalf("published %d documents of %d uploads in %v: more than one per upload per interval (%d)", published, uploads, elapsed, uploads*intervals)
	}
	if published < uploads*intervals/2 { // a loose floor: a busy machine delays the publisher
		t.Fatalf("published only %d documents of %d uploads in %v", published, uploads, elapsed)
	}
	// the documents of all uploads go together: about one round trip per
	// interval (plus the health pings and lease renewals)
	trips := int(after.RoundTrips - before.RoundTrips)
	if trips > 2*intervals+int(elapsed/healthEvery)+int(elapsed/a.renewEvery())+2 {
		t.Fatalf("%d round trips for %d intervals of %d uploads", trips, intervals, uploads)
	}
	t.Logf("%d uploads, %v: %d documents published in %d round trips", uploads, elapsed.Round(time.Millisecond), published, trips)
	// the subscriber saw the latest value
	var last Doc
	for _, d := range sub.Take() {
		last = d
	}
	if string(last.JSON) != string(progressDoc("ca", progress.StateUploading, 999)) {
		t.Fatalf("last document seen: %s", last.JSON)
	}
}

func TestPublishNeverBlocksTheCaller(t *testing.T) {
	srv := testredis.Start(t)
	a := newTestTracker(t, srv, Config{Instance: "a"})
	u, err := a.Claim(bg(), "nb", "", progress.StateUploading, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.Pause() // Redis hangs: every command would wait for its timeout
	defer srv.Resume()
	var worst time.Duration
	for i := range 200 {
		start := time.Now()
		u.Publish(progress.StateUploading, progressDoc("nb", progress.StateUploading, i))
		worst = max(worst, time.Since(start))
		time.Sleep(2 * time.Millisecond)
	}
	if worst > 5*time.Millisecond {
		t.Fatalf("Publish took up to %v with Redis hanging", worst)
	}
}

func TestFinishedRecordsExpireRetainAfterTheyFinish(t *testing.T) {
	srv := testredis.Start(t)
	const retain = 700 * time.Millisecond
	a := newTestTracker(t, srv, Config{Instance: "a", Retain: retain, Lease: 2 * time.Second})
	u := claimed(t, a, "ttl1", "g1")
	rc := srv.Client(t)
	// in flight: the record lives a lease plus retain without renewal
	if ttl := rc.PTTL(bg(), a.keys.record("ttl1")).Val(); ttl <= retain || ttl > retain+2*time.Second {
		t.Fatalf("TTL in flight: %v", ttl)
	}
	u.Publish(progress.StateComplete, progressDoc("ttl1", progress.StateComplete, 1))
	finished := time.Now()
	waitFor(t, time.Second, "the final document", func() bool {
		d, err := a.Lookup(bg(), "ttl1")
		return err == nil && d.State == progress.StateComplete
	})
	if ttl := rc.PTTL(bg(), a.keys.record("ttl1")).Val(); ttl <= 0 || ttl > retain {
		t.Fatalf("TTL once finished: %v, want at most %v", ttl, retain)
	}
	if docs, err := a.LookupGroup(bg(), "g1"); err != nil || len(docs) != 1 || docs[0].State != progress.StateComplete {
		t.Fatalf("group before expiry: %+v, %v", docs, err)
	}
	waitFor(t, 2*retain, "the record to expire", func() bool {
		_, err := a.Lookup(bg(), "ttl1")
		return err == ErrNotFound
	})
	if gone := time.Since(finished); gone < retain-50*time.Millisecond {
		t.Fatalf("record gone %v after it finished, before retain (%v)", gone, retain)
	}
	if _, err := a.LookupGroup(bg(), "g1"); err != ErrNotFound {
		t.Fatalf("group after expiry: %v, want ErrNotFound", err)
	}
	if live, done, err := a.Count(bg()); err != nil || live != 0 || done != 0 {
		t.Fatalf("count after expiry: %d, %d, %v", live, done, err)
	}
}

// More uploads than one batch call takes (maxBatch): the publisher's
// calls and the lease loop's carry several records each, and every
// record gets its own document and result, in order.
func TestBatchCallsKeepEachRecordItsOwn(t *testing.T) {
	srv := testredis.Start(t)
	a := newTestTracker(t, srv, Config{Instance: "a", Lease: 600 * time.Millisecond})
	b := newTestTracker(t, srv, Config{Instance: "b"})
	const n = maxBatch + 44
	uploads := make([]*Upload, n)
	for i := range uploads {
		id := fmt.Sprintf("batched-%d", i)
		u, err := a.Claim(bg(), id, "", progress.StateUploading, progressDoc(id, progress.StateUploading, 0))
		if err != nil {
			t.Fatalf("claim of %s: %v", id, err)
		}
		uploads[i] = u
	}
	watchAll(t, b, uploads...)
	for i, u := range uploads {
		u.Publish(progress.StateUploading, progressDoc(u.ID(), progress.StateUploading, i+1))
	}
	waitFor(t, 5*time.Second, "every progress document stored", func() bool {
		d, err := b.Lookup(bg(), uploads[n-1].ID())
		return err == nil && bytes.Equal(d.JSON, progressDoc(uploads[n-1].ID(), progress.StateUploading, n))
	})
	time.Sleep(time.Second) // past a lease: the renewals in batch calls kept every claim
	for i, u := range uploads {
		d, err := b.Lookup(bg(), u.ID())
		if err != nil || d.State != progress.StateUploading || !bytes.Equal(d.JSON, progressDoc(u.ID(), progress.StateUploading, i+1)) {
			t.Fatalf("lookup of %s on b: %+v %s, %v; want its own progress document", u.ID(), d, d.JSON, err)
		}
		u.Publish(progress.StateComplete, progressDoc(u.ID(), progress.StateComplete, 1000+i))
	}
	waitFor(t, 5*time.Second, "every final document stored", func() bool {
		d, err := b.Lookup(bg(), uploads[n-1].ID())
		return err == nil && d.State == progress.StateComplete
	})
	for i, u := range uploads {
		d, err := b.Lookup(bg(), u.ID())
		if err != nil || d.State != progress.StateComplete || !bytes.Equal(d.JSON, progressDoc(u.ID(), progress.StateComplete, 1000+i)) {
			t.Fatalf("final lookup of %s on b: %+v %s, %v", u.ID(), d, d.JSON, err)
		}
	}
	if lost := a.Stats().Lost; lost != 0 {
		t.Fatalf("%d uploads lost: a batch result went to the wrong record", lost)
	}
	if live, done, err := b.Count(bg()); err != nil || live != 0 || done != n {
		t.Fatalf("count: %d live, %d done, %v; want 0, %d", live, done, err, n)
	}
}
