package ratelog

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestGateLetsOneLineASecondThrough(t *testing.T) {
	var g Gate
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for range 100 {
				if g.Allow() {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 1 {
		t.Fatalf("%d lines let through at once; want 1", n)
	}
	g.last.Add(-int64(2e9)) // as if the last line were two seconds old
	if !g.Allow() {
		t.Fatal("a line a second later was held back")
	}
}
