package redistracker

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
	"go.uber.org/zap"
)

// benchDoc is a status document of the core's size (about 330 bytes).
func benchDoc(id string, received int) []byte {
	return fmt.Appendf(nil, `{"id":%q,"status":"uploading","received":%d,"total":1073741824,"percent":%d,"speed":10485760,"elapsed":12.5,"remaining":90.2,"started_at":"2026-11-30T03:00:00.000000000Z","updated_at":"2026-11-30T03:00:12.500000000Z","finished_at":null,"upstream_status":null,"rate_limit":null}`,
		id, received, received>>24)
}

func benchTracker(b *testing.B, srv *testredis.Server, instance string, interval time.Duration) *Tracker {
	b.Helper()
	return newTestTracker(b, srv, Config{Instance: instance, Interval: interval, Logger: zap.NewNop()})
}

// BenchmarkPublishPerUploadInterval is the cost of one upload's document
// per interval with 1,000 uploads in flight: the core's Publish call
// plus its share of the batch that stores and publishes it.
func BenchmarkPublishPerUploadInterval(b *testing.B) {
	srv := testredis.Start(b)
	tr := benchTracker(b, srv, "a", time.Nanosecond)
	const uploads = 1000
	us := make([]*Upload, uploads)
	for i := range us {
		id := fmt.Sprintf("bench-%04d", i)
		u, err := tr.Claim(bg(), id, "", progress.StateUploading, benchDoc(id, 0))
		if err != nil {
			b.Fatal(err)
		}
		us[i] = u
	}
	markWatched(us...)
	docs := make([][]byte, uploads)
	for i := range docs {
		docs[i] = benchDoc(us[i].ID(), i)
	}
	tr.flush()
	before := tr.Stats()
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; {
		for i := 0; i < uploads && n < b.N; i++ {
			us[i].Publish(progress.StateUploading, docs[i])
			n++
		}
		tr.flush()
	}
	b.StopTimer()
	after := tr.Stats()
	b.ReportMetric(float64(after.RoundTrips-before.RoundTrips)/float64(b.N), "roundtrips/doc")
}

// BenchmarkRoundTripsPerUpload runs uploads through their whole life,
// 1,000 at a time: claim, first document, 10 progress intervals, final
// document. The documents of all uploads in flight share each round
// trip; the claim takes one of its own.
func BenchmarkRoundTripsPerUpload(b *testing.B) {
	srv := testredis.Start(b)
	tr := benchTracker(b, srv, "a", time.Nanosecond)
	const inFlight, intervals = 1000, 10
	before := tr.Stats()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(inFlight, b.N-done)
		us := make([]*Upload, n)
		for i := range us {
			id := fmt.Sprintf("life-%d", done+i)
			u, err := tr.Claim(bg(), id, "", progress.StateUploading, benchDoc(id, 0))
			if err != nil {
				b.Fatal(err)
			}
			us[i] = u
		}
		markWatched(us...)
		tr.flush()
		for r := 1; r <= intervals; r++ {
			for _, u := range us {
				u.Publish(progress.StateUploading, benchDoc(u.ID(), r<<20))
			}
			tr.flush()
		}
		for _, u := range us {
			u.Publish(progress.StateComplete, benchDoc(u.ID(), intervals<<20))
		}
		tr.flush()
		done += n
	}
	b.StopTimer()
	after := tr.Stats()
	b.ReportMetric(float64(after.RoundTrips-before.RoundTrips)/float64(b.N), "roundtrips/upload")
}

// BenchmarkCrossInstanceLatency is the time from the publisher sending
// a document on one instance to a subscriber on another instance
// holding it, on loopback; p50 and p99 are reported. (A progress
// document waits up to half an Interval for the publisher's tick first.)
func BenchmarkCrossInstanceLatency(b *testing.B) {
	srv := testredis.Start(b)
	a := benchTracker(b, srv, "a", time.Nanosecond)
	c := benchTracker(b, srv, "b", time.Nanosecond)
	sub, err := c.Subscribe(bg(), "lat")
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	if err := c.Watch(bg(), "lat"); err != nil {
		b.Fatal(err)
	}
	u, err := a.Claim(bg(), "lat", "", progress.StateUploading, benchDoc("lat", 0))
	if err != nil {
		b.Fatal(err)
	}
	<-sub.Notify()
	sub.Take()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		if c.WatchDue("lat") { // the follower renews its watch, as the core's streams do
			if err := c.Watch(bg(), "lat"); err != nil {
				b.Fatal(err)
			}
		}
		start := time.Now()
		u.Publish(progress.StateUploading, benchDoc("lat", i+1))
		a.flush()
		for got := false; !got; {
			<-sub.Notify()
			for _, d := range sub.Take() {
				got = got || string(d.JSON) == string(benchDoc("lat", i+1))
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkProgressVisibleAtDefaultInterval is the time from the core
// handing a progress document to the uploading instance, once per
// default Interval (100ms) as it does, to a subscriber on another
// instance holding it: the publisher's tick (at most half an Interval)
// plus the transport. Run it with -benchtime 100x.
func BenchmarkProgressVisibleAtDefaultInterval(b *testing.B) {
	srv := testredis.Start(b)
	a := benchTracker(b, srv, "a", DefaultInterval)
	c := benchTracker(b, srv, "b", DefaultInterval)
	sub, err := c.Subscribe(bg(), "vis")
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	if err := c.Watch(bg(), "vis"); err != nil {
		b.Fatal(err)
	}
	u, err := a.Claim(bg(), "vis", "", progress.StateUploading, benchDoc("vis", 0))
	if err != nil {
		b.Fatal(err)
	}
	<-sub.Notify()
	sub.Take()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		time.Sleep(DefaultInterval + time.Duration(i*7%50)*time.Millisecond) // the core's timer, not in step with the tick
		if c.WatchDue("vis") {                                               // the follower renews its watch, as the core's streams do
			if err := c.Watch(bg(), "vis"); err != nil {
				b.Fatal(err)
			}
		}
		start := time.Now()
		u.Publish(progress.StateUploading, benchDoc("vis", i+1))
		for got := false; !got; {
			<-sub.Notify()
			for _, d := range sub.Take() {
				got = got || string(d.JSON) == string(benchDoc("vis", i+1))
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Milliseconds()), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Milliseconds()), "max-ms")
}

// markWatched has the uploads watched for good, as when another
// instance follows each of them: their progress documents are sent.
func markWatched(us ...*Upload) {
	for _, u := range us {
		u.watchedUntil.Store(math.MaxInt64)
	}
}
