package clustertest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

// max_disk across instances sharing one folder through Redis
// (docs/resumable.md, "max_disk and max_size"): one budget for the
// store, not one per instance.

// createSized sends a creation of an upload of size bytes (deferred if
// size < 0) through inst, without a body, and returns its answer.
func createSized(t *testing.T, inst *instance, size int) (*http.Response, []byte) {
	t.Helper()
	h := http.Header{"Upload-Length": {strconv.Itoa(size)}}
	if size < 0 {
		h = http.Header{"Upload-Defer-Length": {"1"}}
	}
	return tusRequest(t, inst, http.MethodPost, "/files/", nil, 0, h)
}

// expectStoreFull checks a creation of size bytes through inst is
// refused with 507 and the JSON error.
func expectStoreFull(t *testing.T, inst *instance, size int, why string) {
	t.Helper()
	resp, body := createSized(t, inst, size)
	if resp == nil || resp.StatusCode != http.StatusInsufficientStorage || !bytes.Contains(body, []byte("max_disk")) {
		t.Fatalf("creation of %d bytes on %s (%s): %v %s, want 507", size, inst.name, why, resp, body)
	}
}

// diskKeys finds the hash of the store's reservations and their total
// (the total stays once the store has had a reservation).
func diskKeys(t *testing.T, rc *redis.Client) (hash, total string) {
	t.Helper()
	keys, err := rc.Keys(context.Background(), "upload_progress:resumable:*:disk:*:total").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("Redis keys %v (%v): want the total of the store's reservations", keys, err)
	}
	return strings.TrimSuffix(keys[0], ":total"), keys[0]
}

// An upload reserved through A counts on B: a creation through B that
// would go past max_disk gets 507, one that fits gets 201. Removing an
// upload through B (DELETE), or delivering it through A, lets its
// reservation go for every instance. A body without a length through B
// stops at the room that A's reservations leave.
func TestMaxDiskIsOneBudgetAcrossInstances(t *testing.T) {
	a, b, back, _ := sharedClusterWith(t, false, 0, "\t\t\tmax_disk 1MiB")
	x := createOn(t, a, 768<<10)
	expectStoreFull(t, b, 512<<10, "A reserves 768 KiB of 1 MiB")
	y := createOn(t, b, 256<<10)
	expectStoreFull(t, a, 1, "the store is full")

	if resp, body := tusRequest(t, b, http.MethodDelete, x, nil, 0, nil); resp == nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE on B of A's upload: %v %s", resp, body)
	}
	z := createOn(t, a, 768<<10) // the room X held
	expectStoreFull(t, b, 1, "the store is full again")

	data := payload(256 << 10)
	finishOn(t, a, y, data)
	back.assertOneDelivery(t, data)
	if resp, body := tusRequest(t, a, http.MethodDelete, z, nil, 0, nil); resp == nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE on A: %v %s", resp, body)
	}

	// 768 KiB reserved through A; a chunked body of 512 KiB through B
	// stores the 256 KiB left, and is answered 507
	createOn(t, a, 768<<10)
	resp, body := createSized(t, b, -1)
	if resp == nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("deferred-length creation on B: %v %s", resp, body)
	}
	deferred := "/files/" + resp.Header.Get("X-Upload-ID")
	chunked := io.MultiReader(bytes.NewReader(payload(512 << 10))) // no length: sent chunked
	resp, body = patchOn(t, b, deferred, 0, chunked, -1)
	if resp == nil || resp.StatusCode != http.StatusInsufficientStorage {
		t.Fatalf("chunked PATCH on B past the room left: %v %s, want 507", resp, body)
	}
	if code, offset := headOn(t, a, deferred); code != http.StatusOK || offset != 256<<10 {
		t.Fatalf("HEAD on A of the chunked upload: %d offset %d, want 200 at %d (the room left)", code, offset, 256<<10)
	}
}

// A reservation in the shared count whose upload was never made (its
// instance died between reserving and creating) is dropped by a sweep
// once it is a minute old: it fills the store until then, not forever.
func TestMaxDiskDropsReservationsOfUploadsNeverMade(t *testing.T) {
	rd := startRedis(t)
	a, _, _, _ := sharedClusterOn(t, rd, false, 0, frequentSweeps+"\n\t\t\tmax_disk 1MiB")
	rc := rd.Client(t)
	ctx := context.Background()
	if resp, _ := tusRequest(t, a, http.MethodDelete, createOn(t, a, 1), nil, 0, nil); resp == nil {
		t.Fatal("DELETE: no answer")
	}
	hash, total := diskKeys(t, rc)
	reserveDead := func(id string, at time.Time) {
		t.Helper()
		if err := rc.HSet(ctx, hash, id, strconv.Itoa(1<<20)+":"+strconv.FormatInt(at.UnixMilli(), 10)).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rc.IncrBy(ctx, total, 1<<20).Err(); err != nil {
			t.Fatal(err)
		}
	}

	reserveDead("fresh-ghost", time.Now())
	for range 3 { // sweeps every 100ms: a fresh one stays
		expectStoreFull(t, a, 1, "a reservation of 1 MiB made just now")
		time.Sleep(200 * time.Millisecond)
	}
	if err := rc.HDel(ctx, hash, "fresh-ghost").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.DecrBy(ctx, total, 1<<20).Err(); err != nil {
		t.Fatal(err)
	}

	reserveDead("old-ghost", time.Now().Add(-2*time.Minute))
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, body := createSized(t, a, 1)
		if resp != nil && resp.StatusCode == http.StatusCreated {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("creation 20s after a stale reservation of the whole store: %v %s, want it dropped", resp, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n, err := rc.HExists(ctx, hash, "old-ghost").Result(); err != nil || n {
		t.Fatalf("the stale reservation is still in Redis (%v %v)", n, err)
	}
}

// With Redis down, max_disk counts what each instance reserves
// meanwhile: a creation that fits in max_disk goes on (201), one larger
// than max_disk is refused (507), and nothing gets 503 for the count.
func TestMaxDiskWithRedisDownCountsEachInstancesOwn(t *testing.T) {
	rd := startRedis(t)
	a, _, _, _ := sharedClusterOn(t, rd, false, 0, "\t\t\tmax_disk 1MiB")
	createOn(t, a, 512<<10) // in the shared count, which A cannot read while Redis is down
	rd.Kill()
	data := payload(768 << 10)
	resp, body := tusRequest(t, a, http.MethodPost, "/files/", bytes.NewReader(data[:64<<10]), 64<<10, http.Header{
		"Upload-Length": {strconv.Itoa(len(data))},
		"Content-Type":  {"application/offset+octet-stream"},
	})
	if resp == nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("creation with a part within max_disk on A with Redis down: %v %s, want 201", resp, body)
	}
	expectStoreFull(t, a, 512<<10, "A reserved 768 KiB of 1 MiB while Redis is down")
}

// BenchmarkRedisPerPatch counts what the lock, claim and disk client of
// the instances (caddy-upload-progress-resumable) sends Redis per PATCH,
// with and without max_disk: an upload of PATCH_BENCH_PATCHES (16)
// PATCHes of 256 KiB alternating between two instances on one folder,
// the last one delivered. It reports the commands sent (a script call
// counting once; a lock or claim sends two in one round trip, see
// acquire in redislock) and the commands Redis ran (a script's own
// included), per PATCH.
//
//	go test -run XXX -bench RedisPerPatch -benchtime 5x ./internal/clustertest
func BenchmarkRedisPerPatch(b *testing.B) {
	patches := 16
	if v, err := strconv.Atoi(os.Getenv("PATCH_BENCH_PATCHES")); err == nil && v > 0 {
		patches = v
	}
	const chunk = 256 << 10
	for _, bc := range []struct{ name, settings string }{
		{"without-max_disk", ""},
		{"with-max_disk", "\t\t\tmax_disk 1GiB"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rd := startRedis(b)
			back := newDeliveries(b, 0)
			dir := b.TempDir()
			opts := strings.Replace(sharedFolderOptions(dir), "\t\t}", bc.settings+"\n\t\t}", 1)
			insts := []*instance{startInstance(b, "A", rd.URL(), opts, back.URL), startInstance(b, "B", rd.URL(), opts, back.URL)}
			mon := rd.Monitor(b)
			data := payload(patches * chunk)
			const name = "caddy-upload-progress-resumable"
			calls0, cmds0 := mon.Calls()[name], mon.Counts()[name]
			n := 0
			b.ResetTimer()
			for range b.N {
				path := createOn(b, insts[0], len(data))
				for i := range patches {
					want := http.StatusNoContent
					if i == patches-1 {
						want = http.StatusCreated
					}
					off := i * chunk
					resp, body := patchOn(b, insts[i%2], path, int64(off), bytes.NewReader(data[off:off+chunk]), chunk)
					if resp == nil || resp.StatusCode != want {
						b.Fatalf("PATCH %d: %v %s", i, resp, body)
					}
					n++
				}
			}
			b.StopTimer()
			calls, cmds := mon.Calls()[name]-calls0, mon.Counts()[name]-cmds0
			b.ReportMetric(float64(calls)/float64(n), "sent/PATCH")
			b.ReportMetric(float64(cmds)/float64(n), "ran/PATCH")
			if got := back.complete(); len(got) != b.N {
				b.Fatalf("the backend got %d complete deliveries, want %d", len(got), b.N)
			}
		})
	}
}

// Instances with max_disk on a shared folder send Redis nothing while
// idle, though they sweep the folder every 100ms: a sweep looks for the
// reservations of a dead instance only after a reservation was refused,
// and the lock client's subscription to release requests closes once
// the instance has held no lock for its linger (10s), so go-redis's
// health-check PING on it (every 3s) stops too: over a window longer
// than that, not one command.
func TestIdleInstancesWithMaxDiskSendRedisNothing(t *testing.T) {
	t.Parallel() // mostly waiting (see the package doc)
	rd := startRedis(t)
	a, b, _, _ := sharedClusterOn(t, rd, false, 0, frequentSweeps+"\n\t\t\tmax_disk 1MiB")
	mon := rd.Monitor(t)
	expectStoreFull(t, b, 2<<20, "larger than max_disk") // a refusal: B's next sweep looks once
	path := createOn(t, a, 64<<10)
	if resp, body := tusRequest(t, b, http.MethodDelete, path, nil, 0, nil); resp == nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE on B: %v %s", resp, body)
	}
	const name = "caddy-upload-progress-resumable"
	if !mon.WaitQuiet(name, 500*time.Millisecond, 20*time.Second) {
		t.Fatalf("the instances kept sending Redis commands after the uploads ended: %q", mon.Recent(name))
	}
	if !releaseUnsubscribed(t, rd, 30*time.Second) {
		t.Errorf("the subscriptions to release requests were still open 30s after the last lock went (linger: 10s)")
	}
	mon.ExpectSilent(t, 4*time.Second, "idle, sweeping every 100ms, after the linger", name)
}

// releaseUnsubscribed waits until no instance is subscribed to a
// channel of the lock client (release requests), or limit passes; it
// reports whether it did.
func releaseUnsubscribed(t *testing.T, rd *testredis.Server, limit time.Duration) bool {
	t.Helper()
	rc := rd.Client(t)
	deadline := time.Now().Add(limit)
	for {
		chans, err := rc.PubSubChannels(context.Background(), "upload_progress:resumable:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(chans) == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}
