package redistracker

import (
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
	"golang.org/x/time/rate"
)

// idleWindow is how long an idle tracker is watched: longer than the
// longest period of any loop that could reach Redis (go-redis's pub/sub
// health check pings after 3s without a message).
const idleWindow = 3500 * time.Millisecond

// TestIdleTrackersMakeNoRoundTrips: a tracker that runs an upload and
// one that follows it (subscription and watch), both sharing
// rate_limit_total, send Redis nothing before, commands while the
// upload runs and is followed, and nothing again once it has ended,
// the subscription is closed and the watch has lapsed.
func TestIdleTrackersMakeNoRoundTrips(t *testing.T) {
	srv := testredis.Start(t)
	mon := srv.Monitor(t)
	const total = 1 << 20
	var demandA atomic.Int64
	a := newTestTracker(t, srv, Config{URL: srv.URL() + "?client_name=idle-a", Instance: "a", WatchTTL: time.Second})
	b := newTestTracker(t, srv, Config{URL: srv.URL() + "?client_name=idle-b", Instance: "b", WatchTTL: time.Second})
	a.ShareRate(total, rate.NewLimiter(total, 32<<10), func() int { return int(demandA.Load()) })
	b.ShareRate(total, rate.NewLimiter(total, 32<<10), func() int { return 0 })

	mon.ExpectSilent(t, idleWindow, "before any upload", "idle-a", "idle-b")

	before := mon.Counts()
	demandA.Add(1)
	u := claimed(t, a, "idle1", "")
	sub := subscribed(t, b, "idle1")
	if err := b.Watch(bg(), "idle1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the watch to be heard", u.Watched)
	u.Publish(progress.StateUploading, progressDoc("idle1", progress.StateUploading, 1000))
	var pending []Doc
	if d := next(t, sub, &pending, 2*time.Second); d.State != progress.StateUploading {
		t.Fatalf("first document on b: %+v", d)
	}
	demandA.Add(-1)
	u.Publish(progress.StateComplete, progressDoc("idle1", progress.StateComplete, 2000))
	for d := next(t, sub, &pending, 2*time.Second); !d.Final(); d = next(t, sub, &pending, 2*time.Second) {
	}
	sub.Close()
	during := mon.Counts()
	if during["idle-a"] == before["idle-a"] || during["idle-b"] == before["idle-b"] {
		t.Fatalf("no commands while the upload ran and was followed: a %d, b %d",
			during["idle-a"]-before["idle-a"], during["idle-b"]-before["idle-b"])
	}
	for _, name := range []string{"idle-a", "idle-b"} {
		if !mon.WaitQuiet(name, 500*time.Millisecond, 10*time.Second) {
			t.Logf("%s did not fall quiet within 10s", name)
		}
	}
	mon.ExpectSilent(t, idleWindow, "after the upload ended and was no longer followed", "idle-a", "idle-b")
	if sub, _ := subscriberConnections(t, srv, a); sub != 0 {
		t.Errorf("a holds %d subscribed connections with no upload", sub)
	}
}

// TestFirstUploadAfterIdleTakesItsShareInItsClaim: while instance b
// uses rate_limit_total, instance a stays silent; the claim of a's first
// upload registers its demand and sets a's limiter to its share before
// Claim returns (before the body is read), and b's share follows within
// a few slices.
func TestFirstUploadAfterIdleTakesItsShareInItsClaim(t *testing.T) {
	srv := testredis.Start(t)
	const total = 4 << 20
	var demandA, demandB atomic.Int64
	limA := rate.NewLimiter(total, 32<<10)
	limB := rate.NewLimiter(total, 32<<10)
	a := newTestTracker(t, srv, Config{Instance: "a"})
	b := newTestTracker(t, srv, Config{Instance: "b"})
	a.ShareRate(total, limA, func() int { return int(demandA.Load()) })
	b.ShareRate(total, limB, func() int { return int(demandB.Load()) })

	// a has an upload, then none: it registers that once and keeps what
	// one more upload would get (half, b having 1)
	demandB.Store(1)
	demandA.Store(1)
	claimed(t, a, "warm", "").Publish(progress.StateComplete, nil)
	waitFor(t, 2*time.Second, "b to see a's demand", func() bool { return near(limB.Limit(), total/2) })
	demandA.Store(0)
	waitFor(t, 2*time.Second, "b to get the whole total", func() bool { return near(limB.Limit(), total) })
	waitFor(t, 2*time.Second, "a without demand to keep one more upload's share", func() bool { return near(limA.Limit(), total/2) })
	waitFor(t, 2*time.Second, "a's upload to be forgotten", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.uploads) == 0
	})
	// meanwhile b's demand grows: a, idle, does not learn it
	demandB.Store(3)
	rt := a.Stats().RoundTrips
	time.Sleep(5 * ShareSlice)
	if n := a.Stats().RoundTrips - rt; n != 0 {
		t.Fatalf("idle a made %d round trips", n)
	}
	// a's first upload: its claim takes its share, a quarter
	demandA.Store(1)
	claimed(t, a, "first", "")
	if got := limA.Limit(); !near(got, total/4) {
		t.Fatalf("right after its claim a's limiter is at %v, want %v", got, rate.Limit(total/4))
	}
	waitFor(t, 2*time.Second, "b to take three quarters", func() bool { return near(limB.Limit(), total*3/4) })
}

// near reports whether two rates are within 0.1 % of each other.
func near(got, want rate.Limit) bool {
	return math.Abs(float64(got-want)) <= float64(want)/1000
}
