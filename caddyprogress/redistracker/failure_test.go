package redistracker

import (
	"errors"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

// bound is the longest a call on a request's path may take while Redis
// is away: the timeout and some scheduling slack (race detector on).
const bound = DefaultTimeout + 40*time.Millisecond

// timed runs f and fails the test if it took longer than bound.
func timed(t *testing.T, what string, f func()) {
	t.Helper()
	start := time.Now()
	f()
	if took := time.Since(start); took > bound {
		t.Fatalf("%s took %v with Redis away (bound %v)", what, took, bound)
	}
}

func TestRedisKilledAndRestartedMidUpload(t *testing.T) {
	srv := testredis.Start(t)
	a := newTestTracker(t, srv, Config{Instance: "a", Lease: time.Second, Timeout: DefaultTimeout})
	b := newTestTracker(t, srv, Config{Instance: "b", Lease: time.Second, Timeout: DefaultTimeout})
	u := claimed(t, a, "k1", "kg")
	sub := subscribed(t, b, "k1")

	srv.Kill()
	// the upload goes on: its documents are taken, nothing blocks
	for i := 1; i <= 20; i++ {
		timed(t, "Publish", func() { u.Publish(progress.StateUploading, progressDoc("k1", progress.StateUploading, i*10)) })
		time.Sleep(20 * time.Millisecond)
	}
	timed(t, "Lookup", func() {
		if _, err := b.Lookup(bg(), "k1"); !errors.Is(err, ErrUnavailable) {
			t.Errorf("lookup with Redis down: %v", err)
		}
	})
	timed(t, "Claim", func() {
		if _, err := a.Claim(bg(), "k2", "", progress.StateUploading, progressDoc("k2", progress.StateUploading, 0)); err != nil {
			t.Errorf("claim with Redis down: %v", err)
		}
	})
	timed(t, "Reserve", func() {
		if err := a.Reserve(bg(), "k3", nil); !errors.Is(err, ErrUnavailable) {
			t.Errorf("reserve with Redis down: %v", err)
		}
	})
	timed(t, "Subscribe", func() {
		if _, err := b.Subscribe(bg(), "k9"); !errors.Is(err, ErrUnavailable) {
			t.Errorf("subscribe with Redis down: %v", err)
		}
	})
	// a call that timed out has the health loop ping at once
	waitFor(t, 2*time.Second, "a to mark Redis down", func() bool { h := a.Health(); return !h.Up && h.LastError != "" })

	srv.Start() // back, empty
	waitFor(t, 3*time.Second, "a to see Redis back", func() bool { return a.Health().Up })
	// a re-claimed and republished its uploads, the one that started
	// while Redis was down included
	waitFor(t, 2*time.Second, "the republished documents", func() bool {
		d1, err1 := b.Lookup(bg(), "k1")
		d2, err2 := b.Lookup(bg(), "k2")
		return err1 == nil && err2 == nil &&
			string(d1.JSON) == string(progressDoc("k1", progress.StateUploading, 200)) && d2.State == progress.StateUploading
	})
	if _, err := b.Claim(bg(), "k1", "", progress.StateUploading, nil); !errors.Is(err, ErrInFlight) {
		t.Fatalf("claim of the re-claimed ID on b: %v, want ErrInFlight", err)
	}
	if docs, err := b.LookupGroup(bg(), "kg"); err != nil || len(docs) != 1 {
		t.Fatalf("group republished: %+v, %v", docs, err)
	}
	// the subscriber on b is subscribed again and sees the end
	waitFor(t, 3*time.Second, "b's pub/sub connection to be back", func() bool {
		return srv.Client(t).PubSubNumSub(bg(), b.keys.uploadChannel("k1")).Val()[b.keys.uploadChannel("k1")] == 1
	})
	sub.Take()
	u.Publish(progress.StateComplete, progressDoc("k1", progress.StateComplete, 200))
	var pending []Doc
	for {
		d := next(t, sub, &pending, 2*time.Second)
		if d.Final() {
			if d.State != progress.StateComplete {
				t.Fatalf("final state %q", d.State)
			}
			break
		}
	}
	if a.Stats().Lost != 0 {
		t.Fatalf("%d uploads lost", a.Stats().Lost)
	}
}

func TestRedisHangingBoundsEveryCall(t *testing.T) {
	srv := testredis.Start(t)
	a := newTestTracker(t, srv, Config{Instance: "a", Timeout: DefaultTimeout})
	u, err := a.Claim(bg(), "h1", "", progress.StateUploading, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	defer srv.Resume()
	timed(t, "Claim", func() { _, _ = a.Claim(bg(), "h2", "", progress.StateUploading, nil) })
	timed(t, "Lookup", func() { _, _ = a.Lookup(bg(), "h1") })
	timed(t, "LookupGroup", func() { _, _ = a.LookupGroup(bg(), "g") })
	timed(t, "Reserve", func() { _ = a.Reserve(bg(), "h3", nil) })
	timed(t, "Subscribe", func() { _, _ = a.Subscribe(bg(), "h4") })
	timed(t, "Publish", func() { u.Publish(progress.StateProcessing, nil) })
	waitFor(t, 2*time.Second, "Redis marked down", func() bool { return !a.Health().Up })
	srv.Resume()
	waitFor(t, 3*time.Second, "Redis marked up", func() bool { return a.Health().Up })
	waitFor(t, 2*time.Second, "the claim made while Redis hung", func() bool {
		d, err := a.Lookup(bg(), "h2")
		return err == nil && d.State == progress.StateUploading
	})
}

func TestUploadEndingWhileRedisIsDownReachesSubscribersAfter(t *testing.T) {
	srv := testredis.Start(t)
	a := newTestTracker(t, srv, Config{Instance: "a"})
	b := newTestTracker(t, srv, Config{Instance: "b"})
	u := claimed(t, a, "e1", "eg")
	sub := subscribed(t, b, "e1")
	groupSub, err := b.SubscribeGroup(bg(), "eg")
	if err != nil {
		t.Fatal(err)
	}
	defer groupSub.Close()

	srv.Kill()
	u.Publish(progress.StateComplete, progressDoc("e1", progress.StateComplete, 99)) // queued
	time.Sleep(300 * time.Millisecond)
	srv.Start()

	for name, s := range map[string]*Subscription{"upload": sub, "group": groupSub} {
		var pending []Doc
		for {
			d := next(t, s, &pending, 3*time.Second)
			if d.Final() {
				if d.State != progress.StateComplete || string(d.JSON) != string(progressDoc("e1", progress.StateComplete, 99)) {
					t.Fatalf("%s subscriber's final document: %+v %s", name, d, d.JSON)
				}
				break
			}
		}
	}
}
