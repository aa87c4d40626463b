package clustertest

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

// idleWindow is how long an idle instance is watched: longer than the
// longest period of any loop that could reach Redis (go-redis's pub/sub
// health check pings after 3s without a message).
const idleWindow = 3500 * time.Millisecond

// TestIdleInstancesMakeNoRedisCommands runs two instances on one Redis,
// each naming its connections (client_name), and counts the commands
// Redis runs for each through MONITOR (a script's own commands count
// for its caller): while neither has an upload in flight nor follows
// one, neither sends any; an upload on A makes A's commands resume and
// leaves B, which neither uploads nor follows, silent; once it has
// ended and its final document is in Redis, A is silent again. With and
// without rate_limit_total, whose bandwidth sharing registers demand
// only while there is some.
func TestIdleInstancesMakeNoRedisCommands(t *testing.T) {
	t.Parallel() // mostly waiting (see the package doc)
	for _, c := range []struct{ name, options string }{
		{"without rate_limit_total", ""},
		{"with rate_limit_total", "\t\trate_limit_total 4MiB"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rs := startRedis(t)
			mon := rs.Monitor(t)
			up := newUpstream(t)
			a := startInstance(t, "A", rs.URL()+"?client_name=idle-a", c.options, up.host)
			startInstance(t, "B", rs.URL()+"?client_name=idle-b", c.options, up.host)

			mon.ExpectSilent(t, idleWindow, "while both are idle", "idle-a", "idle-b")

			before := mon.Counts()
			data := payload(2 << 20)
			began := time.Now()
			r := a.upload("idle-up", paced(data, 64<<10, 40*time.Millisecond), int64(len(data)), nil)
			if r.code != http.StatusOK || up.sha("idle-up") != sha256Hex(data) {
				t.Fatalf("upload through A: %+v, upstream hash %q", r, up.sha("idle-up"))
			}
			waitRecordFinal(t, rs, "idle-up")
			during := mon.Counts()
			took := time.Since(began)
			nA, nB := during["idle-a"]-before["idle-a"], during["idle-b"]-before["idle-b"]
			t.Logf("one upload in flight on A for %v: A %d commands (%.1f/s), B %d", took.Round(time.Millisecond), nA, float64(nA)/took.Seconds(), nB)
			if nA == 0 {
				t.Fatalf("A sent no command for its upload")
			}
			if nB != 0 {
				t.Errorf("B, which neither uploads nor follows, sent %d commands while A uploaded; last: %q", nB, mon.Recent("idle-b"))
			}
			if !mon.WaitQuiet("idle-a", 500*time.Millisecond, 10*time.Second) {
				t.Logf("A did not fall quiet within 10s of its upload's end")
			}
			mon.ExpectSilent(t, idleWindow, "after the upload ended", "idle-a", "idle-b")
		})
	}
}

// waitRecordFinal waits until the upload's record in Redis holds its
// final document.
func waitRecordFinal(t *testing.T, rs *testredis.Server, id string) {
	t.Helper()
	c := rs.Client(t)
	key := fmt.Sprintf("upload_progress:{default:%s}:record", id)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := c.HGet(context.Background(), key, "st").Result()
		if st == "complete" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("record of %s still %q 10s after the upload ended", id, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRateLimitTotalHoldsWhenAnIdleInstanceStartsUploading: B's two
// uploads take rate_limit_total while A, idle, sends Redis nothing; when
// A's first upload starts, its claim registers A's demand and takes
// A's share before the body is read, and B's share follows within a
// slice: from A's start on, the instances together stay at the total.
func TestRateLimitTotalHoldsWhenAnIdleInstanceStartsUploading(t *testing.T) {
	const limit = 2 << 20
	rs := startRedis(t)
	mon := rs.Monitor(t)
	up := newUpstream(t)
	a := startInstance(t, "A", rs.URL()+"?client_name=share-a", "\t\trate_limit_total 2MiB", up.host)
	b := startInstance(t, "B", rs.URL()+"?client_name=share-b", "\t\trate_limit_total 2MiB", up.host)
	data := payload(4 << 20)
	var dones []<-chan result
	for i := range 2 {
		dones = append(dones, b.uploadAsync(fmt.Sprintf("busy-%d", i), bytesReader(data), int64(len(data)), nil))
	}
	before := mon.Counts()
	time.Sleep(1500 * time.Millisecond)
	if n := mon.Counts()["share-a"] - before["share-a"]; n != 0 {
		t.Errorf("idle A sent %d commands while B uploaded; last: %q", n, mon.Recent("share-a"))
	}
	from, fromBytes := time.Now(), up.bytes.Load()
	dones = append(dones, a.uploadAsync("first-on-a", bytesReader(data[:2<<20]), 2<<20, nil))
	time.Sleep(2500 * time.Millisecond) // within the 3.5s the 7 MiB left take
	rate := float64(up.bytes.Load()-fromBytes) / time.Since(from).Seconds()
	for _, d := range dones {
		if r := <-d; r.code != http.StatusOK {
			t.Fatalf("upload: %+v", r)
		}
	}
	t.Logf("total rate over the 2.5s from A's first upload on: %.0f B/s, %.1f%% of rate_limit_total", rate, 100*rate/limit)
	if rate < 0.85*limit || rate > 1.15*limit {
		t.Fatalf("total rate %.0f B/s is not within 15%% of %d", rate, limit)
	}
}
