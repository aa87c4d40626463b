package redistracker

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

func TestClaimRefusesLiveDuplicateOnAnotherInstance(t *testing.T) {
	srv := testredis.Start(t)
	a := newTestTracker(t, srv, Config{Instance: "a"})
	b := newTestTracker(t, srv, Config{Instance: "b"})

	u, err := a.Claim(bg(), "up1", "", progress.StateUploading, progressDoc("up1", progress.StateUploading, 0))
	if err != nil {
		t.Fatalf("claim on a: %v", err)
	}
	if _, err := b.Claim(bg(), "up1", "", progress.StateUploading, progressDoc("up1", progress.StateUploading, 0)); !errors.Is(err, ErrInFlight) {
		t.Fatalf("claim of a live ID on b: got %v, want ErrInFlight", err)
	}
	// once it has finished, the ID may be used again, on any instance
	u.Publish(progress.StateComplete, progressDoc("up1", progress.StateComplete, 10))
	waitFor(t, 2*time.Second, "the final document in redis", func() bool {
		d, err := b.Lookup(bg(), "up1")
		return err == nil && d.State == progress.StateComplete
	})
	if _, err := b.Claim(bg(), "up1", "", progress.StateUploading, progressDoc("up1", progress.StateUploading, 0)); err != nil {
		t.Fatalf("claim of a finished ID on b: %v", err)
	}
}

func TestClaimAtOnceFromTwoInstancesLetsExactlyOneProceed(t *testing.T) {
	srv := testredis.Start(t)
	a := newTestTracker(t, srv, Config{Instance: "a"})
	b := newTestTracker(t, srv, Config{Instance: "b"})
	for i := range 50 {
		id := "race-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		errs := make(chan error, 2)
		for _, tr := range []*Tracker{a, b} {
			go func() {
				_, err := tr.Claim(bg(), id, "", progress.StateUploading, progressDoc(id, progress.StateUploading, 0))
				errs <- err
			}()
		}
		e1, e2 := <-errs, <-errs
		ok := 0
		for _, err := range []error{e1, e2} {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, ErrInFlight):
				t.Fatalf("%s: unexpected error %v", id, err)
			}
		}
		if ok != 1 {
			t.Fatalf("%s: %d claims succeeded (%v, %v), want exactly 1", id, ok, e1, e2)
		}
	}
}

func TestMaxUploadsHoldsAcrossInstances(t *testing.T) {
	srv := testredis.Start(t)
	a := newTestTracker(t, srv, Config{Instance: "a", MaxUploads: 3})
	b := newTestTracker(t, srv, Config{Instance: "b", MaxUploads: 3})

	var uploads []*Upload
	for i, tr := range []*Tracker{a, b, a} {
		id := []string{"m1", "m2", "m3"}[i]
		u, err := tr.Claim(bg(), id, "", progress.StateUploading, progressDoc(id, progress.StateUploading, 0))
		if err != nil {
			t.Fatalf("claim %s: %v", id, err)
		}
		uploads = append(uploads, u)
	}
	if _, err := b.Claim(bg(), "m4", "", progress.StateUploading, nil); !errors.Is(err, ErrFull) {
		t.Fatalf("fourth upload with three in flight: got %v, want ErrFull", err)
	}
	if err := b.Reserve(bg(), "r1", progressDoc("r1", progress.StatePending, 0)); !errors.Is(err, ErrFull) {
		t.Fatalf("reservation with three in flight: got %v, want ErrFull", err)
	}
	// the record written in the same round trip as the refused count is taken back
	for _, id := range []string{"m4", "r1"} {
		if d, err := a.Lookup(bg(), id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("record of the refused %s: got %+v, %v; want ErrNotFound", id, d, err)
		}
	}
	// a finished record makes room: it is evicted for the new upload
	uploads[0].Publish(progress.StateComplete, progressDoc("m1", progress.StateComplete, 5))
	waitFor(t, 2*time.Second, "m1 retired", func() bool {
		live, done, err := a.Count(bg())
		return err == nil && live == 2 && done == 1
	})
	if _, err := b.Claim(bg(), "m4", "", progress.StateUploading, progressDoc("m4", progress.StateUploading, 0)); err != nil {
		t.Fatalf("claim after one finished: %v", err)
	}
	if _, err := b.Lookup(bg(), "m1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("evicted record m1: got %v, want ErrNotFound", err)
	}
	if live, done, err := a.Count(bg()); err != nil || live != 3 || done != 0 {
		t.Fatalf("count: %d live, %d done, %v; want 3, 0", live, done, err)
	}
}

func TestReservationOnOneInstanceIsSeenAndUsedOnAnother(t *testing.T) {
	srv := testredis.Start(t)
	a := newTestTracker(t, srv, Config{Instance: "a"})
	b := newTestTracker(t, srv, Config{Instance: "b"})

	if err := a.Reserve(bg(), "res1", progressDoc("res1", progress.StatePending, 0)); err != nil {
		t.Fatalf("reserve: %v", err)
	}
	d, err := b.Lookup(bg(), "res1")
	if err != nil || d.State != progress.StatePending {
		t.Fatalf("lookup of the reservation on b: %+v, %v", d, err)
	}
	u, err := b.Claim(bg(), "res1", "", progress.StateUploading, progressDoc("res1", progress.StateUploading, 0))
	if err != nil {
		t.Fatalf("upload of a reserved ID: %v", err)
	}
	u.Publish(progress.StateComplete, progressDoc("res1", progress.StateComplete, 42))
	waitFor(t, 2*time.Second, "the final state on a", func() bool {
		d, err := a.Lookup(bg(), "res1")
		return err == nil && d.State == progress.StateComplete && string(d.JSON) == string(progressDoc("res1", progress.StateComplete, 42))
	})
	if err := a.Reserve(bg(), "res1", nil); err != nil {
		t.Fatalf("reserving a finished ID again: %v", err)
	}
	u2, err := a.Claim(bg(), "res2", "", progress.StateUploading, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = u2
	if err := b.Reserve(bg(), "res2", nil); !errors.Is(err, ErrInFlight) {
		t.Fatalf("reserving an ID in flight: got %v, want ErrInFlight", err)
	}
}

func TestClaimIsOneRoundTrip(t *testing.T) {
	srv := testredis.Start(t)
	a := newTestTracker(t, srv, Config{Instance: "a"})
	b := newTestTracker(t, srv, Config{Instance: "b"})

	sub, err := b.Subscribe(bg(), "one")
	if err != nil {
		t.Fatalf("subscribe on b: %v", err)
	}
	defer sub.Close()
	if err := b.Watch(bg(), "one"); err != nil { // b follows "one" before it starts
		t.Fatalf("watch on b: %v", err)
	}
	// twenty claims, one after the other, that nobody watches: the
	// health, renewal and scan loops add a few round trips of their own
	// meanwhile; two per claim would make 40
	before := a.Stats()
	for i := range 20 {
		id := fmt.Sprintf("trip-%d", i)
		if _, err := a.Claim(bg(), id, "", progress.StateUploading, progressDoc(id, progress.StateUploading, 0)); err != nil {
			t.Fatalf("claim %s: %v", id, err)
		}
	}
	time.Sleep(300 * time.Millisecond) // an interval and more: nothing more goes
	after := a.Stats()
	if trips := after.RoundTrips - before.RoundTrips; trips > 25 {
		t.Fatalf("20 claims took %d round trips", trips)
	}
	if published := after.Published - before.Published; published != 0 {
		t.Fatalf("20 claims that nobody watches published %d documents; their claims hold the first", published)
	}
	// the first document still reaches an instance that follows the
	// upload, through the publisher
	if _, err := a.Claim(bg(), "one", "", progress.StateUploading, progressDoc("one", progress.StateUploading, 0)); err != nil {
		t.Fatalf("claim: %v", err)
	}
	var pending []Doc
	first := next(t, sub, &pending, 2*time.Second)
	if first.Seq != 2 || first.State != progress.StateUploading || string(first.JSON) != string(progressDoc("one", progress.StateUploading, 0)) {
		t.Fatalf("first document on b: %+v %s", first, first.JSON)
	}
}

func TestConcurrentClaimsShareRoundTrips(t *testing.T) {
	srv := testredis.Start(t)
	const n = 60
	// room for the duplicate's record and n-2 others: of the n-1 new
	// IDs claimed at once on a, exactly one is refused
	a := newTestTracker(t, srv, Config{Instance: "a", MaxUploads: n - 1})
	b := newTestTracker(t, srv, Config{Instance: "b", MaxUploads: n - 1})
	if _, err := b.Claim(bg(), "dup", "", progress.StateUploading, progressDoc("dup", progress.StateUploading, 0)); err != nil {
		t.Fatalf("claim of dup on b: %v", err)
	}
	ids := []string{"dup"}
	for i := range n - 1 {
		ids = append(ids, fmt.Sprintf("batch-%d", i))
	}
	before := a.Stats()
	start := make(chan struct{})
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = a.Claim(bg(), id, "", progress.StateUploading, progressDoc(id, progress.StateUploading, 0))
		}()
	}
	close(start)
	wg.Wait()
	if !errors.Is(errs[0], ErrInFlight) {
		t.Fatalf("claim of dup, live on b: got %v, want ErrInFlight", errs[0])
	}
	var ok, full []string
	for i, id := range ids[1:] {
		switch err := errs[i+1]; {
		case err == nil:
			ok = append(ok, id)
		case errors.Is(err, ErrFull):
			full = append(full, id)
		default:
			t.Fatalf("claim of %s: unexpected error %v", id, err)
		}
	}
	if len(full) != 1 || len(ok) != n-2 {
		t.Fatalf("%d claims held and %d refused as full (%v), want %d and 1", len(ok), len(full), full, n-2)
	}
	time.Sleep(300 * time.Millisecond) // an interval and more: nobody watches them, nothing more goes
	after := a.Stats()
	if published := after.Published - before.Published; published != 0 {
		t.Fatalf("%d claims that nobody watches published %d documents", len(ok), published)
	}
	// one at a time, the claims alone would take n round trips (and one
	// more for the refused one's record); batched, a few pipelines and
	// the health, renewal and scan loops' own. The publisher's batches
	// (one round trip each) are left out.
	batches := after.PublishLatency.Count - before.PublishLatency.Count
	if trips := (after.RoundTrips - before.RoundTrips) - batches; trips > uint64(n/4) {
		t.Fatalf("%d claims at once took %d round trips beside the publisher's", n, trips)
	} else {
		t.Logf("%d claims at once took %d round trips beside the publisher's", n, trips)
	}
	// the refused claim's record was taken back; the held ones are there
	if d, err := b.Lookup(bg(), full[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("record of the refused %s: got %+v, %v; want ErrNotFound", full[0], d, err)
	}
	for _, id := range ok {
		if d, err := b.Lookup(bg(), id); err != nil || d.State != progress.StateUploading {
			t.Fatalf("lookup of %s on b: %+v, %v", id, d, err)
		}
	}
	if live, done, err := b.Count(bg()); err != nil || live != n-1 || done != 0 {
		t.Fatalf("count: %d live, %d done, %v; want %d, 0", live, done, err, n-1)
	}
}
