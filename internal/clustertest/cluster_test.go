// Package clustertest runs several real Caddy processes that share one
// upload_progress tracker through a real redis-server, as instances
// behind a load balancer would. It is a package of its own so that the
// in-process Caddy tests of caddyprogress are not slowed by it.
//
// Each test starts its own Redis, instances and backend, on free ports.
// A few long tests that mostly wait (silence windows, Redis stopped and
// started again, leases running out) call t.Parallel, so they run two
// at a time (GOMAXPROCS) once the others are done; a test that sets the
// environment (the S3 ones) must not.
package clustertest

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// twoInstances starts Redis, an upstream, and instances A and B with
// the same options.
func twoInstances(t *testing.T, options string) (a, b *instance, up *upstream, redisURL string) {
	t.Helper()
	rs := startRedis(t)
	up = newUpstream(t)
	a = startInstance(t, "A", rs.URL(), options, up.host)
	b = startInstance(t, "B", rs.URL(), options, up.host)
	return a, b, up, rs.URL()
}

func TestUploadThroughAFollowedThroughB(t *testing.T) {
	a, b, up, _ := twoInstances(t, "\t\tnginx_report_path /progress")
	data := payload(4 << 20)
	id := "cross-instance-1"

	stream := b.subscribe(t, "/upload/events/"+id) // before it starts: pending, then through pub/sub
	ws := b.followWS(t, "/upload/ws/"+id)
	done := a.uploadAsync(id, paced(data, 64<<10, 30*time.Millisecond), int64(len(data)), nil)

	var polled []int64
	nginxUploading := false
	for {
		code, s := b.status(t, id)
		if code == http.StatusOK {
			polled = append(polled, s.Received)
			if s.Status == "complete" {
				break
			}
		}
		if !nginxUploading && s.Status == "uploading" {
			report := get(t, b.base+"/progress?X-Progress-ID="+id)
			nginxUploading = strings.HasPrefix(report, `{ "state" : "uploading", "received" : `) &&
				strings.Contains(report, fmt.Sprintf(`"size" : %d }`, len(data)))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !nginxUploading {
		t.Error("B's nginx report never showed the upload uploading")
	}
	res := <-done
	if res.err != nil || res.code != http.StatusOK {
		t.Fatalf("upload through A: %+v", res)
	}
	if got := up.sha(id); got != sha256Hex(data) {
		t.Fatalf("upstream got SHA-256 %s, want %s", got, sha256Hex(data))
	}
	for i := 1; i < len(polled); i++ {
		if polled[i] < polled[i-1] {
			t.Fatalf("B's status went back from %d to %d", polled[i-1], polled[i])
		}
	}
	if len(polled) < 5 || polled[len(polled)-1] != int64(len(data)) {
		t.Fatalf("B's status: %d polls, last %v; want progress up to %d", len(polled), polled[len(polled)-1:], len(data))
	}
	events := stream.all(t, 10*time.Second)
	final := checkStream(t, events, "complete")
	if final.Received != int64(len(data)) {
		t.Errorf("final event on B: received %d, want %d", final.Received, len(data))
	}
	if len(events) < 4 {
		t.Errorf("B's stream had %d events; want pending, progress and the final one", len(events))
	}

	// the WebSocket through B: the same documents, then a normal closure
	ws.wait(t, 10*time.Second)
	if ws.status != websocket.StatusNormalClosure {
		t.Errorf("WebSocket through B closed with %v (%v), want a normal closure", ws.status, ws.err)
	}
	var wsEvents []sseEvent
	for _, m := range ws.messages {
		name := m.Event
		if name == "progress" {
			name = ""
		}
		wsEvents = append(wsEvents, sseEvent{name: name, data: string(m.Data)})
	}
	if wsFinal := checkStream(t, wsEvents, "complete"); wsFinal.Received != int64(len(data)) {
		t.Errorf("WebSocket's final message on B: received %d, want %d", wsFinal.Received, len(data))
	}
	if len(ws.messages) < 4 || ws.messages[0].Event != "pending" {
		t.Errorf("WebSocket through B: %d messages, first %q; want pending, progress and the final one", len(ws.messages), ws.messages[0].Event)
	}

	// the nginx report on B, and a stream opened on B after the end
	if report := get(t, b.base+"/progress?X-Progress-ID="+id); report != "{ \"state\" : \"done\" }\r\n" {
		t.Errorf("B's nginx report after the end: %q", report)
	}
	late := checkStream(t, b.subscribe(t, "/upload/events/"+id).all(t, 5*time.Second), "complete")
	if late.Received != int64(len(data)) {
		t.Errorf("late stream on B: received %d", late.Received)
	}
}

func TestSameIDAtOnceThroughAAndB(t *testing.T) {
	a, b, _, _ := twoInstances(t, "")
	data := payload(1 << 20)
	id := "same-id-twice"
	var start sync.WaitGroup
	start.Add(1)
	results := make([]result, 2)
	var wg sync.WaitGroup
	for i, inst := range []*instance{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start.Wait()
			results[i] = inst.upload(id, paced(data, 32<<10, 40*time.Millisecond), int64(len(data)), nil)
		}()
	}
	start.Done()
	wg.Wait()
	codes := []int{results[0].code, results[1].code}
	if !(codes[0] == 200 && codes[1] == 409 || codes[0] == 409 && codes[1] == 200) {
		t.Fatalf("codes through A and B: %v (errors %v, %v); want one 200 and one 409", codes, results[0].err, results[1].err)
	}
}

func TestReservationOnAUploadOnBStatusOnA(t *testing.T) {
	a, b, up, _ := twoInstances(t, "\t\tclient_ids off")
	var res struct{ ID, Status string }
	req, _ := http.NewRequest(http.MethodPost, a.base+"/upload/status/", nil)
	resp, err := a.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("reservation on A: %s", resp.Status)
	}
	if err := jsonDecode(resp, &res); err != nil || res.ID == "" {
		t.Fatalf("reservation on A: %+v %v", res, err)
	}
	if _, s := b.status(t, res.ID); s.Status != "pending" {
		t.Fatalf("reservation seen on B as %+v, want pending", s)
	}
	data := payload(2 << 20)
	done := b.uploadAsync(res.ID, paced(data, 64<<10, 30*time.Millisecond), int64(len(data)), nil)
	a.waitFor(t, res.ID, 10*time.Second, "uploading on A", func(_ int, s status) bool { return s.Status == "uploading" && s.Received > 0 })
	if r := <-done; r.code != http.StatusOK {
		t.Fatalf("upload through B: %+v", r)
	}
	if up.sha(res.ID) != sha256Hex(data) {
		t.Fatalf("the upstream did not get the upload under the reserved ID (client_ids off on B)")
	}
	s := a.waitFor(t, res.ID, 5*time.Second, "complete on A", func(_ int, s status) bool { return s.Status == "complete" })
	if s.Received != int64(len(data)) {
		t.Fatalf("A's final status: %+v", s)
	}
}

func TestGroupAcrossInstances(t *testing.T) {
	a, b, up, _ := twoInstances(t, "")
	one, two := payload(1<<20), payload(3<<19)
	header := http.Header{"X-Upload-Group": {"album-1"}}
	streamA := a.subscribe(t, "/upload/events/?group=album-1")
	streamB := b.subscribe(t, "/upload/events/?group=album-1")
	d1 := a.uploadAsync("member-a", paced(one, 32<<10, 30*time.Millisecond), int64(len(one)), header)
	d2 := b.uploadAsync("member-b", paced(two, 32<<10, 30*time.Millisecond), int64(len(two)), header)

	// while in flight, either instance shows both members
	deadline := time.Now().Add(10 * time.Second)
	for _, inst := range []*instance{a, b} {
		for {
			var g groupStatus
			code := inst.getJSON(t, "/upload/status/?group=album-1", &g)
			if code == http.StatusOK && len(g.Uploads) == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("group on %s never showed both members: %d %+v", inst.name, code, g)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, d := range []<-chan result{d1, d2} {
		if r := <-d; r.code != http.StatusOK {
			t.Fatalf("member upload: %+v", r)
		}
	}
	if up.sha("member-a") != sha256Hex(one) || up.sha("member-b") != sha256Hex(two) {
		t.Fatal("the upstream got other bytes")
	}
	for name, stream := range map[string]*sseStream{"A": streamA, "B": streamB} {
		events := stream.all(t, 10*time.Second)
		finals := 0
		for _, ev := range events {
			if ev.name != "" && ev.name != "pending" {
				finals++
				var g groupStatus
				if err := jsonUnmarshal(ev.data, &g); err != nil {
					t.Fatal(err)
				}
				if ev.name != "complete" || len(g.Uploads) != 2 || g.Received != int64(len(one)+len(two)) {
					t.Errorf("group's final event on %s: %s %s", name, ev.name, ev.data)
				}
			}
		}
		if finals != 1 {
			t.Errorf("group stream on %s: %d final events, want 1", name, finals)
		}
	}
	var g groupStatus
	if code := b.getJSON(t, "/upload/status/?group=album-1", &g); code != http.StatusOK || g.Status != "complete" || len(g.Uploads) != 2 {
		t.Fatalf("group status on B after the end: %d %+v", code, g)
	}
}

func TestKilledInstanceEndsAbortedOnB(t *testing.T) {
	a, b, _, _ := twoInstances(t, "")
	data := payload(8 << 20)
	id := "dies-with-a"
	_ = a.uploadAsync(id, paced(data, 32<<10, 20*time.Millisecond), int64(len(data)), nil)
	b.waitFor(t, id, 10*time.Second, "uploading on B", func(_ int, s status) bool { return s.Status == "uploading" && s.Received > 0 })
	stream := b.subscribe(t, "/upload/events/"+id)

	a.kill()
	killed := time.Now()
	// the lease is 5s, the scan every second: within 6s, plus slack for a busy machine
	s := b.waitFor(t, id, 12*time.Second, "aborted on B", func(_ int, s status) bool { return s.Status == "aborted" })
	took := time.Since(killed)
	if s.Error != "instance lost" {
		t.Errorf("error %q, want %q", s.Error, "instance lost")
	}
	t.Logf("B reported aborted %s after A was killed (lease 5s)", took.Round(time.Millisecond))
	final := checkStream(t, stream.all(t, 5*time.Second), "aborted")
	if final.Error != "instance lost" {
		t.Errorf("final event's error %q", final.Error)
	}
}

func TestRedisRestartedMidUpload(t *testing.T) {
	rs := startRedis(t)
	up := newUpstream(t)
	a := startInstance(t, "A", rs.URL(), "", up.host)
	b := startInstance(t, "B", rs.URL(), "", up.host)
	data := payload(16 << 20)

	// the same upload with Redis up, for comparison
	base := a.upload("with-redis-up", paced(data, 64<<10, 5*time.Millisecond), int64(len(data)), nil)
	if base.code != http.StatusOK {
		t.Fatalf("upload with Redis up: %+v", base)
	}

	id := "redis-goes-away"
	done := a.uploadAsync(id, paced(data, 64<<10, 5*time.Millisecond), int64(len(data)), nil)
	b.waitFor(t, id, 10*time.Second, "uploading on B", func(_ int, s status) bool { return s.Status == "uploading" })
	rs.Kill()
	time.Sleep(500 * time.Millisecond)
	if code, s := a.status(t, id); code != http.StatusOK || s.Status == "" {
		t.Fatalf("A's own status while Redis is down: %d %+v", code, s)
	}
	res := <-done
	rs.Start() // empty: A republishes what it has
	if res.code != http.StatusOK {
		t.Fatalf("upload while Redis was down: %+v", res)
	}
	if up.sha(id) != sha256Hex(data) {
		t.Fatal("the upstream got other bytes")
	}
	t.Logf("upload took %s with Redis killed mid-way, %s with Redis up", res.took.Round(time.Millisecond), base.took.Round(time.Millisecond))
	if res.took > 2*base.took+time.Second {
		t.Errorf("with Redis down the upload took %s, with it up %s: it was slowed", res.took, base.took)
	}
	s := b.waitFor(t, id, 10*time.Second, "complete on B after Redis is back", func(_ int, s status) bool { return s.Status == "complete" })
	if s.Received != int64(len(data)) {
		t.Fatalf("B's final status: %+v", s)
	}
	var listing struct {
		Trackers []struct {
			Name  string
			Redis []struct {
				Up        bool   `json:"up"`
				LastError string `json:"last_error"`
			}
		}
	}
	resp, err := http.Get(a.admin + "/upload_progress/")
	if err != nil {
		t.Fatal(err)
	}
	if err := jsonDecode(resp, &listing); err != nil {
		t.Fatal(err)
	}
	if len(listing.Trackers) != 1 || len(listing.Trackers[0].Redis) != 1 || !listing.Trackers[0].Redis[0].Up || listing.Trackers[0].Redis[0].LastError == "" {
		t.Errorf("admin listing of A after Redis came back: %+v (want up, with the last error)", listing)
	}
	metrics := get(t, a.admin+"/metrics")
	for _, want := range []string{
		`caddy_upload_progress_redis_up{tracker="default"} 1`,
		`caddy_upload_progress_redis_round_trips_total{tracker="default"}`,
		`caddy_upload_progress_redis_errors_total{tracker="default"}`,
		`caddy_upload_progress_redis_publish_latency_seconds_count{tracker="default"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(metrics, `caddy_upload_progress_redis_errors_total{tracker="default"} 0`) {
		t.Errorf("no Redis error counted although Redis was killed")
	}
}

func TestSharedRateLimitTotalAcrossInstances(t *testing.T) {
	const limit = 2 << 20
	a, b, up, _ := twoInstances(t, "\t\trate_limit_total 2MiB")
	data := payload(4 << 20)
	var dones []<-chan result
	for i, inst := range []*instance{a, b, b} {
		dones = append(dones, inst.uploadAsync("rate-"+string(rune('a'+i)), bytesReader(data), int64(len(data)), nil))
	}
	time.Sleep(1500 * time.Millisecond) // the shares settle
	from, fromBytes := time.Now(), up.bytes.Load()
	time.Sleep(3 * time.Second)
	rate := float64(up.bytes.Load()-fromBytes) / time.Since(from).Seconds()
	for _, d := range dones {
		if r := <-d; r.code != http.StatusOK {
			t.Fatalf("upload: %+v", r)
		}
	}
	t.Logf("total rate over 3s: %.0f B/s, %.1f%% of rate_limit_total", rate, 100*rate/limit)
	if rate < 0.85*limit || rate > 1.15*limit {
		t.Fatalf("total rate %.0f B/s is not within 15%% of %d", rate, limit)
	}
}

func TestMaxUploadsHoldsAcrossInstances(t *testing.T) {
	a, b, up, _ := twoInstances(t, "\t\tmax_uploads 1")
	data := payload(1 << 20)
	done := a.uploadAsync("fills-it", paced(data, 32<<10, 30*time.Millisecond), int64(len(data)), nil)
	b.waitFor(t, "fills-it", 10*time.Second, "uploading on B", func(_ int, s status) bool { return s.Status == "uploading" })

	// B holds no record itself, but the tracker's one is in flight on A
	req, _ := http.NewRequest(http.MethodPost, b.base+"/upload", bytesReader([]byte("second upload")))
	req.Header.Set("X-Upload-ID", "untracked-on-b")
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Upload-ID") != "" {
		t.Fatalf("upload through B with the cluster full: %s, ID header %q; want 200, proxied untracked", resp.Status, resp.Header.Get("X-Upload-ID"))
	}
	if up.sha("untracked-on-b") != sha256Hex([]byte("second upload")) {
		t.Fatal("the untracked upload did not reach the upstream intact")
	}
	if code, s := b.status(t, "untracked-on-b"); code != http.StatusNotFound {
		t.Fatalf("untracked upload's status on B: %d %+v", code, s)
	}
	resp, err = b.client.Post(b.base+"/upload/status/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("reservation on B with the cluster full: %s", resp.Status)
	}
	if r := <-done; r.code != http.StatusOK {
		t.Fatalf("the upload through A: %+v", r)
	}
}
