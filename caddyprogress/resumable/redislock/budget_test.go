package redislock

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

// Two instances' Budgets of one store are one count: what one reserves
// limits the other, Grow stops at the room left, and what one forgets
// (an upload it removed) is room for the other.
func TestBudgetIsOneCountAcrossInstances(t *testing.T) {
	srv := testredis.Start(t)
	a, b := instance(t, srv, time.Second).Budget("/shared"), instance(t, srv, time.Second).Budget("/shared")
	other := instance(t, srv, time.Second).Budget("/elsewhere")
	const limit = 1000
	if !a.Reserve("u1", 600, limit) {
		t.Fatal("a's first reservation was refused")
	}
	if b.Reserve("u2", 600, limit) {
		t.Fatal("b reserved 600 beside a's 600 within 1000")
	}
	if !other.Reserve("u2", 600, limit) {
		t.Fatal("another store's count was refused: stores share nothing")
	}
	if got := b.Grow("u2", 900, limit); got != 400 {
		t.Fatalf("b grew to %d, want the 400 left", got)
	}
	if !a.ReserveAtLeast("u1", 500, limit) {
		t.Fatal("ReserveAtLeast below what is held was refused")
	}
	b.Settle("u2", 100, 100) // a request that stored 100 ends
	if !a.ReserveAtLeast("u1", 900, limit) {
		t.Fatal("a could not take the room b let go")
	}
	b.Forget("u1") // b removes a's upload
	if !b.Reserve("u3", 900, limit) {
		t.Fatal("the room of an upload forgotten through b was not free")
	}
}

// Reservations made at once from two instances never go past the limit
// together (each change is one script).
func TestBudgetHoldsUnderConcurrentReservations(t *testing.T) {
	srv := testredis.Start(t)
	budgets := []interface {
		Reserve(string, int64, int64) bool
	}{instance(t, srv, time.Second).Budget("/s"), instance(t, srv, time.Second).Budget("/s")}
	var mu sync.Mutex
	granted := 0
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			if budgets[i%2].Reserve(string(rune('a'+i)), 100, 1000) {
				mu.Lock()
				granted++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if granted != 10 {
		t.Fatalf("%d reservations of 100 granted within 1000, want 10", granted)
	}
}

// Once a reservation was refused, a reservation not changed for longer
// than asked, of an upload not kept, is pruned; a recent one, or one
// kept, stays.
func TestBudgetPrunesStaleReservations(t *testing.T) {
	srv := testredis.Start(t)
	c := instance(t, srv, time.Second)
	bud := c.Budget("/s")
	bud.Reserve("kept", 300, 0)
	bud.Reserve("recent", 300, 0)
	rc := srv.Client(t)
	keys := c.keys.disk("/s")
	ctx := context.Background()
	if err := rc.HSet(ctx, keys[0], "stale", "400:1000").Err(); err != nil { // changed in 1970
		t.Fatal(err)
	}
	if err := rc.IncrBy(ctx, keys[1], 400).Err(); err != nil {
		t.Fatal(err)
	}
	if bud.Reserve("refused", 1<<40, 1000) { // a refusal: what has Prune look
		t.Fatal("a reservation past the limit was granted")
	}
	bud.Prune(func(id string) bool { return id == "kept" }, time.Minute)
	left, err := rc.HKeys(ctx, keys[0]).Result()
	if err != nil || len(left) != 2 {
		t.Fatalf("reservations after pruning: %v %v, want kept and recent", left, err)
	}
	if total, _ := rc.Get(ctx, keys[1]).Int64(); total != 600 {
		t.Fatalf("total after pruning: %d, want 600", total)
	}
}

// With Redis down, a Budget counts what it reserves meanwhile on its
// own: within the limit it grants, past it it refuses.
func TestBudgetCountsItsOwnWhileRedisIsDown(t *testing.T) {
	srv := testredis.Start(t)
	bud := instance(t, srv, time.Second).Budget("/s")
	bud.Reserve("before", 900, 1000) // in Redis, unreadable meanwhile
	srv.Kill()
	if !bud.Reserve("u1", 600, 1000) {
		t.Fatal("a reservation within the limit was refused with Redis down")
	}
	if bud.Reserve("u2", 600, 1000) {
		t.Fatal("a reservation past the limit of this instance's own count was granted")
	}
}
