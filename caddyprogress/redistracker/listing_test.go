package redistracker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

func TestListShowsTheUploadsInFlightOfEveryInstance(t *testing.T) {
	srv := testredis.Start(t)
	a := newTestTracker(t, srv, Config{Instance: "web-a:41"})
	b := newTestTracker(t, srv, Config{Instance: "web-b:42"})
	ctx := context.Background()

	if _, err := a.Claim(ctx, "on-a", "batch", progress.StateUploading, progressDoc("on-a", progress.StateUploading, 10)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Claim(ctx, "on-b", "", progress.StateUploading, progressDoc("on-b", progress.StateUploading, 20)); err != nil {
		t.Fatal(err)
	}
	ended, err := a.Claim(ctx, "ended", "", progress.StateUploading, progressDoc("ended", progress.StateUploading, 0))
	if err != nil {
		t.Fatal(err)
	}
	ended.Publish(progress.StateComplete, progressDoc("ended", progress.StateComplete, 30))
	waitFor(t, 5*time.Second, "the final document stored", func() bool {
		d, err := b.Lookup(ctx, "ended")
		return err == nil && d.State == progress.StateComplete
	})
	waitFor(t, 5*time.Second, "the ended upload retired from the live index", func() bool {
		l, err := b.List(ctx)
		return err == nil && l.InFlight == 2
	})

	l, err := b.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l.Instance != "web-b:42" || l.InFlight != 2 || l.Truncated || l.Skipped != 0 || len(l.Uploads) != 1 {
		t.Fatalf("listing %+v, want this instance web-b:42, 2 uploads in flight, A's listed", l)
	}
	got := map[string]Listed{}
	for _, u := range l.Uploads {
		got[u.ID] = u
	}
	if u := got["on-a"]; u.Instance != "web-a:41" || u.Group != "batch" || u.State != progress.StateUploading || u.Seq < 1 ||
		string(u.JSON) != string(progressDoc("on-a", progress.StateUploading, 10)) {
		t.Errorf("on-a listed as %+v (%s)", u, u.JSON)
	}
	// and on A, B's
	if l, err = a.List(ctx); err != nil || len(l.Uploads) != 1 {
		t.Fatalf("A's listing: %+v, %v, want B's upload", l, err)
	}
	if u := l.Uploads[0]; u.ID != "on-b" || u.Instance != "web-b:42" || u.Group != "" || string(u.JSON) != string(progressDoc("on-b", progress.StateUploading, 20)) {
		t.Errorf("on-b listed on A as %+v (%s)", u, u.JSON)
	}
}

func TestListStaysWithinItsBounds(t *testing.T) {
	srv := testredis.Start(t)
	tr := newTestTracker(t, srv, Config{Instance: "here"})
	client := srv.Client(t)
	ctx := context.Background()
	k := newKeys("test")
	put := func(id string, doc string) {
		t.Helper()
		if err := client.HSet(ctx, k.record(id), "st", "uploading", "doc", doc, "own", "x", "seq", 1, "ins", "there").Err(); err != nil {
			t.Fatal(err)
		}
		if err := client.ZAdd(ctx, k.live(), redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli()), Member: id}).Err(); err != nil {
			t.Fatal(err)
		}
	}

	// a document past ListMaxDoc is skipped, not read
	put("huge", `{"id":"huge","pad":"`+strings.Repeat("x", ListMaxDoc)+`"}`)
	put("small", `{"id":"small"}`)
	l, err := tr.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l.Skipped != 1 || len(l.Uploads) != 1 || l.Uploads[0].ID != "small" || l.Uploads[0].Instance != "there" || l.Truncated {
		t.Fatalf("with a huge document: %+v, want it skipped and small listed", l)
	}

	// past ListBudget bytes of documents, the rest is left out
	doc := `{"pad":"` + strings.Repeat("y", 60<<10) + `"}`
	n := ListBudget/len(doc) + 5
	for i := range n {
		put(fmt.Sprintf("big-%03d", i), doc)
	}
	l, err = tr.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	read := 0
	for _, u := range l.Uploads {
		read += len(u.JSON)
	}
	if !l.Truncated || read > ListBudget || len(l.Uploads) < ListBudget/len(doc)-1 || l.InFlight != int64(n+2) {
		t.Fatalf("%d documents of %d bytes: %d listed (%d bytes), truncated %v, in flight %d; want at most %d bytes read and truncated",
			n, len(doc), len(l.Uploads), read, l.Truncated, l.InFlight, ListBudget)
	}

	// past ListMax uploads, the rest is left out and counted
	ids := make([]redis.Z, 0, ListMax)
	for i := range ListMax {
		ids = append(ids, redis.Z{Score: float64(time.Now().Add(2 * time.Hour).UnixMilli()), Member: fmt.Sprintf("many-%04d", i)})
	}
	if err := client.ZAdd(ctx, k.live(), ids...).Err(); err != nil {
		t.Fatal(err)
	}
	l, err = tr.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Truncated || l.InFlight != int64(ListMax+n+2) {
		t.Fatalf("%d in the live index: truncated %v, in flight %d", ListMax+n+2, l.Truncated, l.InFlight)
	}
}

func TestListSaysRedisIsUnavailable(t *testing.T) {
	srv := testredis.Start(t)
	tr := newTestTracker(t, srv, Config{})
	srv.Kill()
	start := time.Now()
	if _, err := tr.List(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("List with Redis killed: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("List with Redis killed took %s", d)
	}
}

func TestInstanceNamesAreBounded(t *testing.T) {
	srv := testredis.Start(t)
	for _, bad := range []string{strings.Repeat("n", 129), "two words", "tab\there"} {
		if _, err := New(Config{URL: srv.URL(), Tracker: "test", Instance: bad}); err == nil || !strings.Contains(err.Error(), "instance") {
			t.Errorf("instance %q: %v, want an error naming the instance", bad, err)
		}
	}
}

func TestListOnRedisCluster(t *testing.T) {
	srv := testredis.StartCluster(t)
	url := "redis-cluster://" + srv.Addr()
	a := newTestTracker(t, srv, Config{URL: url, Instance: "a"})
	b := newTestTracker(t, srv, Config{URL: url, Instance: "b"})
	ctx := context.Background()
	for i, tr := range []*Tracker{a, b} {
		id := fmt.Sprintf("cluster-%d", i)
		if _, err := tr.Claim(ctx, id, "", progress.StateUploading, progressDoc(id, progress.StateUploading, i)); err != nil {
			t.Fatal(err)
		}
	}
	for i, tr := range []*Tracker{a, b} {
		l, err := tr.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		other := fmt.Sprintf("cluster-%d", 1-i)
		if l.InFlight != 2 || len(l.Uploads) != 1 || l.Uploads[0].ID != other || l.Uploads[0].Instance != []string{"b", "a"}[i] ||
			string(l.Uploads[0].JSON) != string(progressDoc(other, progress.StateUploading, 1-i)) {
			t.Fatalf("listing of %s on Redis Cluster: %+v", tr.Instance(), l)
		}
	}
}

// BenchmarkListThousandUploads is one listing of 1,000 uploads in
// flight on another instance, each with a 400-byte document:
//
//	go test -run '^$' -bench ListThousandUploads ./caddyprogress/redistracker/
func BenchmarkListThousandUploads(b *testing.B) {
	srv := testredis.Start(b)
	a := newTestTracker(b, srv, Config{Instance: "a"})
	lister := newTestTracker(b, srv, Config{Instance: "b"})
	ctx := context.Background()
	pad := strings.Repeat("x", 400-len(`{"id":"up-0000","pad":""}`))
	for i := range ListMax {
		id := fmt.Sprintf("up-%04d", i)
		if _, err := a.Claim(ctx, id, "", progress.StateUploading, fmt.Appendf(nil, `{"id":%q,"pad":%q}`, id, pad)); err != nil {
			b.Fatal(err)
		}
	}
	before := lister.Stats().RoundTrips
	b.ReportAllocs()
	for b.Loop() {
		l, err := lister.List(ctx)
		if err != nil || len(l.Uploads) != ListMax {
			b.Fatalf("%d listed, %v", len(l.Uploads), err)
		}
	}
	b.ReportMetric(float64(lister.Stats().RoundTrips-before)/float64(b.N), "round-trips/op")
}
