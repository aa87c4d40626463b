package caddyprogress

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// getGroupStatus polls a group's status.
func (p *proxy) getGroupStatus(t testing.TB, group string) (int, GroupStatus) {
	t.Helper()
	resp, err := p.client.Get(p.base + DefaultStatusPath + "?group=" + group)
	if err != nil {
		t.Fatalf("polling group status: %v", err)
	}
	defer resp.Body.Close()
	var g GroupStatus
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil {
		t.Fatalf("decoding group status: %v", err)
	}
	return resp.StatusCode, g
}

// checkSums checks that a group's figures are the sums of its members'.
func checkSums(t *testing.T, what string, g GroupStatus) {
	t.Helper()
	var received, total int64
	knownTotal := true
	for _, u := range g.Uploads {
		received += u.Received
		if u.Total == nil {
			knownTotal = false
		} else {
			total += *u.Total
		}
	}
	if g.Received != received {
		t.Fatalf("%s: group received %d, members add up to %d", what, g.Received, received)
	}
	if knownTotal != (g.Total != nil) || (g.Total != nil && *g.Total != total) {
		t.Fatalf("%s: group total %v, members add up to %d (all known: %v)", what, g.Total, total, knownTotal)
	}
}

func TestGroupOfFiveParallelUploads(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "", up.host)
	const group = "batch-1"
	events := subscribeURL(t, p.client, p.base+DefaultEventsPath+"?group="+group)
	if first := events.next(t, 5*time.Second); first.name != "pending" {
		t.Fatalf("first group event %q, want pending", first.name)
	}

	var bodies [][]byte
	var wg sync.WaitGroup
	var wantTotal int64
	for i := range 5 {
		data := payload((i + 1) << 20)[i:] // five different sizes and contents
		bodies = append(bodies, data)
		wantTotal += int64(len(data))
		id := fmt.Sprintf("%s-%d", group, i)
		wg.Go(func() {
			body := &pacedReader{data: data, chunk: 128 << 10, pause: 15 * time.Millisecond}
			resp, _ := p.upload(t, http.MethodPut, "/files/"+id, body, int64(len(data)),
				http.Header{"X-Upload-Id": {id}, "X-Upload-Group": {group}})
			if resp.StatusCode != http.StatusOK {
				t.Errorf("upload %s answered %d", id, resp.StatusCode)
			}
		})
	}

	// poll the group while its members upload
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	polls, inFlight := 0, 0
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-time.After(20 * time.Millisecond):
		}
		code, g := p.getGroupStatus(t, group)
		if code == http.StatusNotFound {
			continue
		}
		polls++
		checkSums(t, fmt.Sprintf("poll %d", polls), g)
		if g.Status == "uploading" {
			inFlight++
		}
	}
	if inFlight < 3 {
		t.Fatalf("only %d of %d polls saw the group uploading", inFlight, polls)
	}

	for i, data := range bodies {
		id := fmt.Sprintf("%s-%d", group, i)
		if got, _ := up.get(id); got.bytes != int64(len(data)) || got.sha256 != sha256Hex(data) {
			t.Fatalf("upstream got %s changed: %d bytes", id, got.bytes)
		}
		p.waitForStatus(t, id, "complete")
	}
	code, g := p.getGroupStatus(t, group)
	if code != http.StatusOK || g.Group != group || g.Status != "complete" || g.Received != wantTotal || len(g.Uploads) != 5 {
		t.Fatalf("group status after the uploads: %d %s %s received %d of %d, %d uploads", code, g.Group, g.Status, g.Received, wantTotal, len(g.Uploads))
	}
	checkSums(t, "final status", g)
	if *g.Total != wantTotal || *g.Percent != 100 {
		t.Fatalf("final total %d percent %d", *g.Total, *g.Percent)
	}

	// events: pending, progress adding up, then complete exactly once
	all := events.all(t, 10*time.Second)
	if len(all) < 3 {
		t.Fatalf("got %d group events, want progress then complete", len(all))
	}
	finals := 0
	var prev int64 = -1
	for i, ev := range all {
		var eg GroupStatus
		if err := json.Unmarshal([]byte(ev.data), &eg); err != nil {
			t.Fatalf("event %d data %q: %v", i, ev.data, err)
		}
		checkSums(t, fmt.Sprintf("event %d", i), eg)
		if ev.id != strconv.FormatInt(eg.Received, 10) || eg.Received < prev {
			t.Fatalf("event %d: id %q, received %d after %d", i, ev.id, eg.Received, prev)
		}
		prev = eg.Received
		switch ev.name {
		case "":
			if eg.Status != "uploading" {
				t.Fatalf("progress event %d has status %s", i, eg.Status)
			}
		case "complete":
			finals++
			if i != len(all)-1 || eg.Received != wantTotal || len(eg.Uploads) != 5 {
				t.Fatalf("complete event %d of %d: received %d of %d, %d uploads", i, len(all), eg.Received, wantTotal, len(eg.Uploads))
			}
		default:
			t.Fatalf("event %d is %q", i, ev.name)
		}
	}
	if finals != 1 {
		t.Fatalf("%d complete events, want exactly one", finals)
	}
}

func TestGroupRefusesInvalidIDs(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "", up.host)
	resp, body := p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4,
		http.Header{"X-Upload-Id": {"in-bad-group"}, "X-Upload-Group": {"no spaces"}})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"error"`) {
		t.Fatalf("invalid group answered %d %s, want 400 with an error", resp.StatusCode, body)
	}
	if up.requests.Load() != 0 {
		t.Fatalf("the upstream saw an upload with an invalid group")
	}
	for _, url := range []string{DefaultStatusPath + "?group=a/b", DefaultEventsPath + "?group=", DefaultStatusPath + "?group=" + strings.Repeat("g", 129)} {
		resp, err := p.client.Get(p.base + url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("GET %s answered %d, want 400", url, resp.StatusCode)
		}
	}
	code, g := p.getGroupStatus(t, "nobody-here")
	if code != http.StatusNotFound || g.Group != "nobody-here" || g.Status != "unknown" {
		t.Fatalf("unknown group: %d %+v, want 404 unknown", code, g)
	}
}

func TestGroupEventsGiveUpAfterWait(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "wait 300ms", up.host)
	events := subscribeURL(t, p.client, p.base+DefaultEventsPath+"?group=never").all(t, 10*time.Second)
	if len(events) != 2 || events[0].name != "pending" || events[1].name != "error" || !strings.Contains(events[1].data, `"unknown"`) {
		t.Fatalf("events = %+v, want pending then error unknown", events)
	}
}

func TestGroupStatusRules(t *testing.T) {
	tr := newTracker("unit")
	defer tr.Destruct()
	start := func(id string, total int64) *upload {
		u, err := tr.start(id, total, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		tr.join("g", u, 1000)
		return u
	}
	status := func() GroupStatus {
		members, _ := tr.groupMembers("g", time.Now())
		return groupSnapshot("g", members)
	}
	a, b := start("a", 10), start("b", 20)
	a.addReceived(10)
	b.addReceived(5)
	g := status()
	if g.Status != "uploading" || g.Received != 15 || *g.Total != 30 || *g.Percent != 50 || len(g.Uploads) != 2 || g.Uploads[0].ID != "a" {
		t.Fatalf("two members: %+v", g)
	}
	c := start("c", -1) // chunked: no total
	if g := status(); g.Total != nil || g.Percent != nil {
		t.Fatalf("a member without a total: total %v percent %v, want null", g.Total, g.Percent)
	}
	tr.finish(a, progress.StateComplete, 200, "", time.Minute)
	tr.finish(b, progress.StateAborted, 0, "gone", time.Minute)
	if g := status(); g.Status != "uploading" {
		t.Fatalf("with c in flight: %s, want uploading", g.Status)
	}
	tr.finish(c, progress.StateComplete, 200, "", time.Minute)
	if g := status(); g.Status != "aborted" {
		t.Fatalf("one member aborted: %s, want aborted", g.Status)
	}
	d := start("d", 1)
	tr.finish(d, progress.StateError, 500, "x", time.Minute)
	if g := status(); g.Status != "error" {
		t.Fatalf("one member in error: %s, want error", g.Status)
	}

	// a member's record replaced by a new upload with the same ID leaves
	// the group; the group goes when the last record does
	if _, err := tr.start("d", 1, 0, 100); err != nil {
		t.Fatal(err)
	}
	if members, _ := tr.groupMembers("g", time.Now()); len(members) != 3 {
		t.Fatalf("%d members after d was replaced, want 3", len(members))
	}
	tr.removeExpired(time.Now().Add(2 * time.Minute))
	if members, _ := tr.groupMembers("g", time.Now()); len(members) != 0 || len(tr.groups.byKey) != 0 {
		t.Fatalf("group left after its records expired: %d members", len(members))
	}
}

func TestGroupSubscriberAfterItFinished(t *testing.T) {
	up := newUpstream(t)
	up.status = http.StatusInternalServerError
	p := startProxy(t, "", up.host)
	for _, id := range []string{"late-1", "late-2"} {
		p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {id}, "X-Upload-Group": {"late"}})
		p.waitForStatus(t, id, "error")
	}
	start := time.Now()
	events := subscribeURL(t, p.client, p.base+DefaultEventsPath+"?group=late").all(t, 5*time.Second)
	if len(events) != 1 || events[0].name != "error" {
		t.Fatalf("events for a finished group = %+v, want one error event", events)
	}
	var g GroupStatus
	if err := json.Unmarshal([]byte(events[0].data), &g); err != nil || g.Status != "error" || g.Received != 8 || len(g.Uploads) != 2 {
		t.Fatalf("final event = %s (%v)", events[0].data, err)
	}
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Fatalf("final event after %s, before one interval without a new member", waited)
	}
}

// groupSnapshot is a group's document as a client decodes it.
func groupSnapshot(id string, members []*statusDoc) GroupStatus {
	var buf bytes.Buffer
	if err := lookAtGroup(id, members).writeTo(&buf); err != nil {
		panic(err)
	}
	var g GroupStatus
	if err := json.Unmarshal(buf.Bytes(), &g); err != nil {
		panic(fmt.Sprintf("group document %s: %v", buf.Bytes(), err))
	}
	return g
}
