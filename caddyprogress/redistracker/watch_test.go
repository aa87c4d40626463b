package redistracker

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

// An upload's progress reaches another instance only while that one
// watches it: before, its claim's document is what Lookup shows and
// nothing is published; a watch has its current document sent at once
// and its progress published until the watch expires; the final
// document is always published.
func TestProgressIsPublishedOnlyWhileWatched(t *testing.T) {
	srv := testredis.Start(t)
	const ttl = 600 * time.Millisecond
	a := newTestTracker(t, srv, Config{Instance: "a", Interval: 20 * time.Millisecond, WatchTTL: ttl})
	b := newTestTracker(t, srv, Config{Instance: "b", WatchTTL: ttl})

	u := claimed(t, a, "w1", "")
	u.SetCurrent(func() (State, []byte) {
		return progress.StateUploading, progressDoc("w1", progress.StateUploading, 777)
	})
	sub := subscribed(t, b, "w1")

	before := a.Stats()
	for i := 1; i <= 5; i++ {
		u.Publish(progress.StateUploading, progressDoc("w1", progress.StateUploading, i))
		time.Sleep(30 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if got := sub.Take(); len(got) != 0 || a.Stats().Published != before.Published || u.Watched() {
		t.Fatalf("unwatched: %d documents reached b, %d published, watched %v; want none",
			len(got), a.Stats().Published-before.Published, u.Watched())
	}
	if d, err := b.Lookup(bg(), "w1"); err != nil || !bytes.Equal(d.JSON, progressDoc("w1", progress.StateUploading, 0)) {
		t.Fatalf("lookup before a watch: %s, %v; want the claim's document", d.JSON, err)
	}

	if err := b.Watch(bg(), "w1"); err != nil {
		t.Fatalf("watch: %v", err)
	}
	var pending []Doc
	if d := next(t, sub, &pending, 2*time.Second); !bytes.Equal(d.JSON, progressDoc("w1", progress.StateUploading, 777)) {
		t.Fatalf("first document after the watch: %s; want the current one (SetCurrent)", d.JSON)
	}
	if !u.Watched() {
		t.Fatal("not watched after a watch")
	}
	u.Publish(progress.StateUploading, progressDoc("w1", progress.StateUploading, 800))
	if d := next(t, sub, &pending, 2*time.Second); !bytes.Equal(d.JSON, progressDoc("w1", progress.StateUploading, 800)) {
		t.Fatalf("progress while watched: %s", d.JSON)
	}

	waitFor(t, 2*ttl, "the watch to expire", func() bool { return !u.Watched() })
	u.Publish(progress.StateUploading, progressDoc("w1", progress.StateUploading, 900))
	time.Sleep(150 * time.Millisecond)
	if got := sub.Take(); len(got) != 0 {
		t.Fatalf("%d documents reached b after the watch expired", len(got))
	}
	// nobody watches: the final document is stored, not published
	u.Publish(progress.StateComplete, progressDoc("w1", progress.StateComplete, 1000))
	waitFor(t, 2*time.Second, "the final document stored", func() bool {
		d, err := b.Lookup(bg(), "w1")
		return err == nil && d.State == progress.StateComplete && bytes.Equal(d.JSON, progressDoc("w1", progress.StateComplete, 1000))
	})
	time.Sleep(100 * time.Millisecond)
	if got := sub.Take(); len(got) != 0 {
		t.Fatalf("%d documents reached b, nobody watching, at the end", len(got))
	}
}

// A watched upload's final document is published; an upload nobody
// watches has its final document stored only.
func TestFinalDocumentPublishedWhenWatched(t *testing.T) {
	srv := testredis.Start(t)
	a := newTestTracker(t, srv, Config{Instance: "a"})
	b := newTestTracker(t, srv, Config{Instance: "b"})
	sub := subscribed(t, b, "end")
	u := claimed(t, a, "end", "")
	if err := b.Watch(bg(), "end"); err != nil {
		t.Fatal(err)
	}
	u.Publish(progress.StateError, progressDoc("end", progress.StateError, 3))
	var pending []Doc
	d := next(t, sub, &pending, 2*time.Second)
	for !d.Final() {
		d = next(t, sub, &pending, 2*time.Second)
	}
	if d.State != progress.StateError || !bytes.Equal(d.JSON, progressDoc("end", progress.StateError, 3)) {
		t.Fatalf("final document: %+v %s", d, d.JSON)
	}
}

// A follower that watches an ID before any upload has it (an event
// stream waiting for the upload to start) leaves a mark that expires
// with the watch and that Lookup does not see; the upload that claims
// the ID meanwhile is watched from its start. So is one that claims a
// watched reservation.
func TestWatchBeforeTheClaimWatchesFromTheStart(t *testing.T) {
	srv := testredis.Start(t)
	const ttl = 2 * time.Second
	a := newTestTracker(t, srv, Config{Instance: "a", WatchTTL: ttl})
	b := newTestTracker(t, srv, Config{Instance: "b", WatchTTL: ttl})
	rc := srv.Client(t)

	if err := b.Watch(bg(), "early"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lookup(bg(), "early"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup of a watch mark: %v, want ErrNotFound", err)
	}
	if pttl := rc.PTTL(bg(), a.keys.record("early")).Val(); pttl <= 0 || pttl > ttl {
		t.Fatalf("watch mark's TTL: %v, want at most %v", pttl, ttl)
	}
	sub := subscribed(t, b, "early")
	u, err := a.Claim(bg(), "early", "", progress.StateUploading, progressDoc("early", progress.StateUploading, 0))
	if err != nil {
		t.Fatalf("claim of a watched ID: %v", err)
	}
	waitFor(t, time.Second, "the claimed upload to be watched", u.Watched)
	u.Publish(progress.StateUploading, progressDoc("early", progress.StateUploading, 5))
	var pending []Doc
	for d := next(t, sub, &pending, 2*time.Second); !bytes.Equal(d.JSON, progressDoc("early", progress.StateUploading, 5)); d = next(t, sub, &pending, 2*time.Second) {
		if d.Final() {
			t.Fatalf("unexpected %+v", d)
		}
	}

	if err := a.Reserve(bg(), "booked", progressDoc("booked", progress.StatePending, 0)); err != nil {
		t.Fatal(err)
	}
	if err := b.Watch(bg(), "booked"); err != nil {
		t.Fatal(err)
	}
	r, err := a.Claim(bg(), "booked", "", progress.StateUploading, progressDoc("booked", progress.StateUploading, 0))
	if err != nil {
		t.Fatalf("claim of a watched reservation: %v", err)
	}
	waitFor(t, time.Second, "the reservation's upload to be watched", r.Watched)

	// nobody watches this one
	n := claimed(t, a, "alone", "")
	time.Sleep(200 * time.Millisecond)
	if n.Watched() {
		t.Fatal("an upload nobody watches is watched")
	}
}

// WatchDue says due once per half WatchTTL per ID.
func TestWatchDueOncePerHalfPeriod(t *testing.T) {
	srv := testredis.Start(t)
	b := newTestTracker(t, srv, Config{Instance: "b", WatchTTL: 400 * time.Millisecond})
	if !b.WatchDue("x") {
		t.Fatal("first call not due")
	}
	if b.WatchDue("x") {
		t.Fatal("second call at once due")
	}
	if !b.WatchDue("y") {
		t.Fatal("another ID not due")
	}
	time.Sleep(250 * time.Millisecond)
	if !b.WatchDue("x") {
		t.Fatal("not due again after half the period")
	}
}

// recentIDs holds at most max IDs: when full of unexpired ones it drops
// new ones, and it sweeps the expired ones out at most once per half
// life.
func TestRecentIDsStayBounded(t *testing.T) {
	r := newRecentIDs(2, time.Second)
	t0 := time.Unix(1000, 0)
	r.add("a", t0)
	r.add("b", t0)
	r.add("c", t0.Add(100*time.Millisecond)) // full: dropped
	if _, ok := r.at["c"]; ok || len(r.at) != 2 {
		t.Fatalf("added past max: %v", r.at)
	}
	r.add("a", t0.Add(200*time.Millisecond)) // an ID it has is renewed, full or not
	if at, fresh := r.seen("a", t0.Add(1100*time.Millisecond)); !fresh || !at.Equal(t0.Add(200*time.Millisecond)) {
		t.Fatalf("a renewed: %v %v", at, fresh)
	}
	r.add("c", t0.Add(1100*time.Millisecond)) // b expired: swept out, c fits
	if _, ok := r.at["b"]; ok || len(r.at) != 2 {
		t.Fatalf("after the sweep: %v", r.at)
	}
	if _, fresh := r.seen("c", t0.Add(2200*time.Millisecond)); fresh {
		t.Fatal("c fresh past its life")
	}
	r.add("d", t0.Add(1200*time.Millisecond)) // full again, swept 100ms ago: no sweep, dropped
	if _, ok := r.at["d"]; ok {
		t.Fatalf("swept again within half a life: %v", r.at)
	}
}
