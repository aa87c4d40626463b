package redislock

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

// clientName is the name the Coordinator's connections give Redis
// (Dial), by which the monitor counts their commands.
const clientName = "caddy-upload-progress-resumable"

// pingEvery is go-redis's health-check interval on a pub/sub connection
// without traffic: a window longer than it sees a PING if one is open.
const pingEvery = 3 * time.Second

// lingering is a Coordinator on srv whose subscription lingers for
// linger once it holds no lock.
func lingering(t *testing.T, srv *testredis.Server, lease, linger time.Duration) *Coordinator {
	t.Helper()
	c, err := Dial(srv.URL(), Config{Tracker: "t", Lease: lease, Linger: linger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// subscribers waits until the release channel has want subscribers, or
// limit passes; it reports whether it did.
func subscribers(t *testing.T, srv *testredis.Server, c *Coordinator, want int64, limit time.Duration) bool {
	t.Helper()
	rc := srv.Client(t)
	deadline := time.Now().Add(limit)
	for {
		n, err := rc.PubSubNumSub(context.Background(), c.keys.release()).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n[c.keys.release()] == want {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An idle Coordinator sends Redis nothing: once its lock is released and
// the linger has passed, its subscription to release requests is closed,
// so go-redis's health-check PINGs stop with it, and its renewal loop
// (ticking every 100ms here) has nothing to renew.
func TestIdleCoordinatorSendsRedisNothing(t *testing.T) {
	srv := testredis.Start(t)
	mon := srv.Monitor(t)
	c := lingering(t, srv, 300*time.Millisecond, 200*time.Millisecond)
	l := lockOf(t, c, "idle1")
	if err := l.Lock(context.Background(), func() {}); err != nil {
		t.Fatal(err)
	}
	if !subscribers(t, srv, c, 1, 10*time.Second) {
		t.Fatal("a holder of a lock did not subscribe to release requests")
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	if !subscribers(t, srv, c, 0, 10*time.Second) {
		t.Log("the subscription was still open 10s after the last lock went (a linger of 200ms)")
	}
	mon.ExpectSilent(t, pingEvery+time.Second, "idle after its lock was released and the linger passed", clientName)
}

// A release request reaches a holder whose lock was taken after its
// previous subscription closed (a new one is opened): another instance's
// request gets the lock long before the lease (an hour) ends.
func TestReleaseRequestReachesAHolderOnAFreshSubscription(t *testing.T) {
	srv := testredis.Start(t)
	a := lingering(t, srv, time.Hour, 100*time.Millisecond)
	b := lingering(t, srv, time.Hour, 100*time.Millisecond)
	for round := range 3 {
		held := lockOf(t, a, "fresh")
		asked := make(chan struct{})
		if err := held.Lock(context.Background(), func() { close(asked) }); err != nil {
			t.Fatal(err)
		}
		go func() {
			<-asked // as tusd does: the holder's request stops and unlocks
			_ = held.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		wanting := lockOf(t, b, "fresh")
		err := wanting.Lock(ctx, func() {})
		cancel()
		if err != nil {
			t.Fatalf("round %d: the other instance's lock: %v (lease is an hour: only a release request lets it in)", round, err)
		}
		<-asked
		if err := wanting.Unlock(); err != nil {
			t.Fatal(err)
		}
		// both subscriptions closed after their linger: the next round's
		// holder subscribes anew
		if !subscribers(t, srv, a, 0, 10*time.Second) {
			t.Fatalf("round %d: the subscriptions were not closed 10s after the last lock went", round)
		}
	}
}

// Subscriptions opened and closed, and one open at Close, leave no
// goroutine behind: Close waits for its listener, which waits for
// go-redis's receiving one.
func TestSubscriptionsLeaveNoGoroutine(t *testing.T) {
	srv := testredis.Start(t)
	srv.Client(t) // its goroutines, if any, before the count
	time.Sleep(100 * time.Millisecond)
	base := runtime.NumGoroutine()
	c, err := Dial(srv.URL(), Config{Tracker: "t", Lease: time.Hour, Linger: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		l := lockOf(t, c, "leak")
		if err := l.Lock(context.Background(), func() {}); err != nil {
			t.Fatal(err)
		}
		if !subscribers(t, srv, c, 1, 10*time.Second) {
			t.Fatal("a holder of a lock did not subscribe to release requests")
		}
		_ = l.Unlock()
		if !subscribers(t, srv, c, 0, 10*time.Second) {
			t.Fatal("the subscription was not closed 10s after the last lock went")
		}
	}
	if err := lockOf(t, c, "leak").Lock(context.Background(), func() {}); err != nil {
		t.Fatal(err)
	}
	if !subscribers(t, srv, c, 1, 10*time.Second) {
		t.Fatal("a holder of a lock did not subscribe to release requests")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			stacks := string(buf[:runtime.Stack(buf, true)])
			t.Fatalf("%d goroutines after Close, %d before New:\n%s", runtime.NumGoroutine(), base,
				strings.TrimSpace(stacks))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
