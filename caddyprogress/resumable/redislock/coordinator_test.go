package redislock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tus/tusd/v2/pkg/handler"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/resumable"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

// instance is one Coordinator on srv, as one Caddy instance has.
func instance(t *testing.T, srv *testredis.Server, lease time.Duration) *Coordinator {
	t.Helper()
	c, err := Dial(srv.URL(), Config{Tracker: "t", Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func lockOf(t *testing.T, c *Coordinator, id string) handler.Lock {
	t.Helper()
	l, err := c.Locker().NewLock(id)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// A lock held on one instance is asked to let go, over pub/sub, when a
// request on another instance wants it; the second gets it once the
// first unlocks, long before the lease would end.
func TestLockHolderIsAskedToReleaseAcrossInstances(t *testing.T) {
	srv := testredis.Start(t)
	a, b := instance(t, srv, time.Hour), instance(t, srv, time.Hour)
	held := lockOf(t, a, "up1")
	asked := make(chan struct{})
	if err := held.Lock(context.Background(), func() { close(asked) }); err != nil {
		t.Fatal(err)
	}
	go func() {
		<-asked // as tusd does: the holder's request stops and unlocks
		_ = held.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wanting := lockOf(t, b, "up1")
	if err := wanting.Lock(ctx, func() {}); err != nil {
		t.Fatalf("the second instance's lock: %v (lease is an hour: only a release request lets it in)", err)
	}
	select {
	case <-asked:
	default:
		t.Fatal("the holder was never asked to release")
	}
	if err := wanting.Unlock(); err != nil {
		t.Fatal(err)
	}
}

// A holder that never lets go keeps the lock while it renews its lease:
// the other instance's request times out with tusd's ErrLockTimeout.
func TestHeldLockIsRenewedAndRefusesOthers(t *testing.T) {
	srv := testredis.Start(t)
	a, b := instance(t, srv, 300*time.Millisecond), instance(t, srv, 300*time.Millisecond)
	if err := lockOf(t, a, "up2").Lock(context.Background(), func() {}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond) // five leases
	defer cancel()
	if err := lockOf(t, b, "up2").Lock(ctx, func() {}); !errors.Is(err, handler.ErrLockTimeout) {
		t.Fatalf("lock of a renewed lock: %v, want ErrLockTimeout", err)
	}
}

// The lock of an instance that died (its process gone: no renewal, no
// unlock) is taken by another once its lease ends.
func TestLockOfADeadInstanceEndsWithItsLease(t *testing.T) {
	srv := testredis.Start(t)
	a, b := instance(t, srv, 400*time.Millisecond), instance(t, srv, 400*time.Millisecond)
	if err := lockOf(t, a, "up3").Lock(context.Background(), func() {}); err != nil {
		t.Fatal(err)
	}
	a.cancel() // its renewal and its subscription stop, as if killed
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := lockOf(t, b, "up3").Lock(ctx, func() {}); err != nil {
		t.Fatalf("lock after the holder died: %v", err)
	}
}

// A delivery is claimed by one instance at a time; the claim is kept
// while renewed, taken by another after its release, and its context
// ends when the claim is lost (its key gone).
func TestDeliveryClaimIsExclusiveAndEndsWhenLost(t *testing.T) {
	srv := testredis.Start(t)
	a, b := instance(t, srv, 300*time.Millisecond), instance(t, srv, 300*time.Millisecond)
	ctx := context.Background()
	la, err := a.ClaimDelivery(ctx, "up4")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // three leases: kept by renewals
	if _, err := b.ClaimDelivery(ctx, "up4"); !errors.Is(err, resumable.ErrClaimed) {
		t.Fatalf("second claim: %v, want ErrClaimed", err)
	}
	if la.Context().Err() != nil {
		t.Fatal("a renewed claim's context ended")
	}
	la.Release()
	lb, err := b.ClaimDelivery(ctx, "up4")
	if err != nil {
		t.Fatalf("claim after release: %v", err)
	}
	// the key taken away (as if the lease ended while this instance was
	// paused): the holder's context ends at its next renewal
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rc.Close()
	if err := rc.Del(ctx, b.keys.delivery("up4")).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lb.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a lost claim's context did not end")
	}
}

// With Redis down, no lock or claim is granted: both fail with an error.
func TestRedisDownGrantsNothing(t *testing.T) {
	srv := testredis.Start(t)
	a := instance(t, srv, time.Second)
	srv.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := lockOf(t, a, "up5").Lock(ctx, func() {}); err == nil || errors.Is(err, handler.ErrLockTimeout) {
		t.Fatalf("lock with redis down: %v, want a redis error", err)
	}
	if _, err := a.ClaimDelivery(ctx, "up5"); err == nil || errors.Is(err, resumable.ErrClaimed) {
		t.Fatalf("claim with redis down: %v, want a redis error", err)
	}
}

// A claim that cannot be renewed (Redis gone) is let go before its
// lease could end in Redis: its context ends, and its delivery stops.
func TestClaimLetsGoWhenRenewalsFail(t *testing.T) {
	srv := testredis.Start(t)
	a := instance(t, srv, 600*time.Millisecond)
	claim, err := a.ClaimDelivery(context.Background(), "up6")
	if err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	select {
	case <-claim.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the claim was kept with Redis gone")
	}
}

// A lock whose renewals fail (Redis gone) is kept: no other instance
// can take it while Redis does not answer. When Redis is back (empty),
// the holder sets its lock there again, and another instance is refused
// it (and asks the holder to let go).
func TestLockIsKeptWhileRedisIsDownAndSetAgainAfter(t *testing.T) {
	srv := testredis.Start(t)
	a, b := instance(t, srv, 300*time.Millisecond), instance(t, srv, 300*time.Millisecond)
	asked := make(chan struct{})
	if err := lockOf(t, a, "up7").Lock(context.Background(), func() { close(asked) }); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	select {
	case <-asked:
		t.Fatal("the holder was asked to let go with Redis gone")
	case <-time.After(2 * time.Second): // more than six leases
	}
	srv.Start()
	rc := srv.Client(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if n, _ := rc.Exists(context.Background(), a.keys.lock("up7")).Result(); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lock was not set again in Redis once it was back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() { _ = lockOf(t, b, "up7").Lock(ctx, func() {}) }()
	select {
	case <-asked: // b found it held, and asked
	case <-time.After(10 * time.Second):
		t.Fatal("another instance's request did not find the lock held")
	}
}

// A lock found another's when Redis answers again is let go at once.
func TestLockFoundAnothersOnceRedisIsBackIsLetGo(t *testing.T) {
	srv := testredis.Start(t)
	a := instance(t, srv, 300*time.Millisecond)
	asked := make(chan struct{})
	if err := lockOf(t, a, "up8").Lock(context.Background(), func() { close(asked) }); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	time.Sleep(time.Second)
	srv.Start()
	if err := srv.Client(t).Set(context.Background(), a.keys.lock("up8"), "another", 0).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-asked:
	case <-time.After(10 * time.Second):
		t.Fatal("a lock that is another's in Redis was kept")
	}
}

// For a lease after Redis restarted empty (it lost the locks and claims
// it held), no claim is granted: a holder of before finds its claim gone
// and stops meanwhile. Then claims are granted at once again.
func TestNothingIsGrantedForALeaseAfterRedisRestartsEmpty(t *testing.T) {
	srv := testredis.Start(t)
	const lease = 600 * time.Millisecond
	a := instance(t, srv, lease)
	srv.Kill()
	srv.Start()
	start := time.Now()
	claim, err := a.ClaimDelivery(context.Background(), "up9")
	if err != nil {
		t.Fatal(err)
	}
	claim.Release()
	if took := time.Since(start); took < lease-10*time.Millisecond {
		t.Fatalf("a claim was granted %v after Redis restarted empty, want a lease (%v) or more", took, lease)
	}
	if ok, fresh, err := a.acquire(context.Background(), a.keys.delivery("up10"), "token"); err != nil || !ok || fresh {
		t.Fatalf("a claim a lease after the restart: granted %v, waiting %v (%v); want granted at once", ok, fresh, err)
	}
}
