package clustertest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// adminListing is the admin listing (GET /upload_progress/) as these
// tests read it.
type adminListing struct {
	Trackers []struct {
		Name    string            `json:"name"`
		Uploads []json.RawMessage `json:"uploads"`
		Cluster *struct {
			Instance  string `json:"instance"`
			Available bool   `json:"available"`
			InFlight  int64  `json:"in_flight"`
			Truncated bool   `json:"truncated"`
		} `json:"cluster"`
	} `json:"trackers"`
}

// adminUpload is one upload of the listing.
type adminUpload struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	Received int64  `json:"received"`
	Total    *int64 `json:"total"`
	Group    string `json:"group"`
	Instance string `json:"instance"`
}

// adminGet GETs path on the instance's admin endpoint.
func (inst *instance) adminGet(t testing.TB, path string) (int, []byte) {
	t.Helper()
	resp, err := inst.client.Get(inst.admin + path)
	if err != nil {
		t.Fatalf("GET %s on %s's admin endpoint: %v", path, inst.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// listing reads the admin listing (path: /upload_progress/ and a
// query), which must answer 200 with one tracker, default.
func (inst *instance) listing(t testing.TB, path string) (adminListing, map[string]adminUpload, []byte) {
	t.Helper()
	code, body := inst.adminGet(t, path)
	var l adminListing
	if err := json.Unmarshal(body, &l); err != nil || code != http.StatusOK || len(l.Trackers) != 1 || l.Trackers[0].Name != "default" {
		t.Fatalf("GET %s on %s: %d %s (%v), want 200 and the tracker default", path, inst.name, code, body, err)
	}
	uploads := make(map[string]adminUpload)
	for _, raw := range l.Trackers[0].Uploads {
		var u adminUpload
		if err := json.Unmarshal(raw, &u); err != nil {
			t.Fatal(err)
		}
		if _, twice := uploads[u.ID]; twice {
			t.Fatalf("GET %s on %s lists %s twice: %s", path, inst.name, u.ID, body)
		}
		uploads[u.ID] = u
	}
	return l, uploads, body
}

// instanceName is the name an instance goes by across the cluster: its
// host name and process ID.
func (inst *instance) instanceName(t testing.TB) string {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s:%d", host, inst.cmd.Process.Pid)
}

// heldUpload starts an upload through inst whose body is sent in the
// parts written to the returned channel, and ends when it is closed.
func heldUpload(inst *instance, id string, size int64, header http.Header) (chan<- []byte, <-chan result) {
	r, w := io.Pipe()
	parts := make(chan []byte)
	go func() {
		for p := range parts {
			if _, err := w.Write(p); err != nil {
				return
			}
		}
		w.Close()
	}()
	return parts, inst.uploadAsync(id, r, size, header)
}

func TestAdminListingShowsTheUploadsOfEveryInstance(t *testing.T) {
	rs := startRedis(t)
	up := newUpstream(t)
	a := startInstance(t, "A", rs.URL(), "", up.host)
	b := startInstance(t, "B", rs.URL(), "", up.host)
	nameA, nameB := a.instanceName(t), b.instanceName(t)
	data := payload(1 << 20)

	onA, doneA := heldUpload(a, "on-a", int64(len(data)), http.Header{"X-Upload-Group": {"shared-batch"}})
	onA <- data[:256<<10]
	onB, doneB := heldUpload(b, "on-b", int64(len(data)), nil)
	onB <- data[:100<<10]
	a.waitFor(t, "on-a", 30*time.Second, "256 KiB received on A", func(_ int, s status) bool { return s.Received == 256<<10 })
	b.waitFor(t, "on-b", 30*time.Second, "100 KiB received on B", func(_ int, s status) bool { return s.Received == 100<<10 })

	// without ?cluster=1: B's own uploads, as before, and no cluster part
	l, uploads, body := b.listing(t, "/upload_progress/")
	if l.Trackers[0].Cluster != nil || len(uploads) != 1 || uploads["on-b"].Instance != "" {
		t.Fatalf("B's listing without ?cluster=1: %s, want on-b alone, no instance, no cluster", body)
	}

	// with it: A's upload too, with A's name and its progress (stored by
	// A's lease renewals while nobody watches it)
	var remote adminUpload
	var raw string
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, uploads, body = b.listing(t, "/upload_progress/?cluster=1")
		remote, raw = uploads["on-a"], string(body)
		if remote.Received == 256<<10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B's listing never showed on-a at 256 KiB: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c := l.Trackers[0].Cluster
	if c == nil || c.Instance != nameB || !c.Available || c.InFlight != 2 || c.Truncated || len(uploads) != 2 {
		t.Fatalf("B's cluster listing: %s, want instance %s, available, 2 in flight, on-a and on-b", raw, nameB)
	}
	if remote.Instance != nameA || remote.Status != "uploading" || remote.Total == nil || *remote.Total != 1<<20 || remote.Group != "shared-batch" {
		t.Errorf("on-a listed on B as %+v, want instance %s, uploading, total 1 MiB, group shared-batch", remote, nameA)
	}
	if local := uploads["on-b"]; local.Instance != nameB || local.Received != 100<<10 {
		t.Errorf("on-b listed on B as %+v, want instance %s and 100 KiB", local, nameB)
	}
	// a remote entry has the fields a local one has, and no other
	for _, raw := range l.Trackers[0].Uploads {
		var fields map[string]any
		_ = json.Unmarshal(raw, &fields)
		keys := make([]string, 0, len(fields))
		for k := range fields {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		want := "id instance received speed started_at status total"
		if fields["id"] == "on-a" {
			want = "group id instance received speed started_at status total"
		}
		if got := strings.Join(keys, " "); got != want {
			t.Errorf("an entry of B's cluster listing has the fields %q, want %q: %s", got, want, raw)
		}
	}

	// on A, its own upload is local (listed once, with A's name)
	_, onAList, body := a.listing(t, "/upload_progress/?cluster=1")
	if u := onAList["on-a"]; u.Instance != nameA || u.Received != 256<<10 || onAList["on-b"].Instance != nameB {
		t.Errorf("A's cluster listing: %s", body)
	}

	// more bytes on A show on B
	onA <- data[256<<10 : 768<<10]
	deadline = time.Now().Add(30 * time.Second)
	for {
		_, uploads, body = b.listing(t, "/upload_progress/?cluster=1")
		if uploads["on-a"].Received == 768<<10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B's listing never showed on-a at 768 KiB: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A's upload ends: B's listing drops it, and B's admin route gives
	// its final status with ?cluster=1 (as this instance knows it without)
	onA <- data[768<<10:]
	close(onA)
	if res := <-doneA; res.err != nil || res.code != http.StatusOK {
		t.Fatalf("upload through A: %+v", res)
	}
	if up.sha("on-a") != sha256Hex(data) {
		t.Fatal("the upstream got other bytes for on-a")
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		_, uploads, body = b.listing(t, "/upload_progress/?cluster=1")
		if _, still := uploads["on-a"]; !still {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B's listing still shows on-a after it ended: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := b.adminGet(t, "/upload_progress/default/on-a"); code != http.StatusNotFound {
		t.Errorf("B's admin route for on-a without ?cluster=1: %d %s, want 404 (B has no record of it)", code, body)
	}
	code, body := b.adminGet(t, "/upload_progress/default/on-a?cluster=1")
	var final status
	if err := json.Unmarshal(body, &final); err != nil || code != http.StatusOK || final.Status != "complete" || final.Received != 1<<20 {
		t.Errorf("B's admin route for on-a with ?cluster=1: %d %s, want 200 complete with 1 MiB", code, body)
	}

	// a bad value of cluster is refused, in words
	if code, body := b.adminGet(t, "/upload_progress/?cluster=maybe"); code != http.StatusBadRequest || !strings.Contains(string(body), `cluster=\"maybe\": expected 1`) {
		t.Errorf("?cluster=maybe: %d %s, want 400 saying what is expected", code, body)
	}

	onB <- data[100<<10:]
	close(onB)
	if res := <-doneB; res.err != nil || res.code != http.StatusOK {
		t.Fatalf("upload through B: %+v", res)
	}
}

func TestAdminListingWithRedisDownListsThisInstancesUploads(t *testing.T) {
	rs := startRedis(t)
	up := newUpstream(t)
	a := startInstance(t, "A", rs.URL(), "", up.host)
	b := startInstance(t, "B", rs.URL(), "", up.host)
	data := payload(64 << 10)
	onA, doneA := heldUpload(a, "down-a", int64(len(data)), nil)
	onA <- data[:1000]
	onB, doneB := heldUpload(b, "down-b", int64(len(data)), nil)
	onB <- data[:2000]
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, uploads, body := b.listing(t, "/upload_progress/?cluster=1")
		if len(uploads) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B's listing never showed both uploads: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}

	rs.Kill()
	start := time.Now()
	polls := 0
	var l adminListing
	var uploads map[string]adminUpload
	var body []byte
	for {
		l, uploads, body = b.listing(t, "/upload_progress/?cluster=1")
		polls++
		if c := l.Trackers[0].Cluster; c != nil && !c.Available {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("B's listing never said the cluster part is unavailable: %s", body)
		}
	}
	for range 20 { // more listings while Redis is down: each answers, the log line comes once a second
		l, uploads, body = b.listing(t, "/upload_progress/?cluster=1")
		polls++
	}
	c := l.Trackers[0].Cluster
	if c == nil || c.Available || c.InFlight != 0 || c.Instance != b.instanceName(t) || len(uploads) != 1 || uploads["down-b"].Received != 2000 {
		t.Fatalf("B's listing with Redis down: %s, want this instance's upload alone and the cluster unavailable", body)
	}
	var whole map[string]any
	_ = json.Unmarshal(body, &whole)
	cluster, _ := json.Marshal(whole["trackers"].([]any)[0].(map[string]any)["cluster"])
	if want := fmt.Sprintf(`{"available":false,"in_flight":0,"instance":%q}`, b.instanceName(t)); string(cluster) != want {
		t.Errorf("the cluster part with Redis down is %s, want %s (no error text)", cluster, want)
	}
	elapsed := time.Since(start)
	if n := strings.Count(b.logText(), "listing the uploads of every instance"); n < 1 || n > int(elapsed/time.Second)+1 {
		t.Errorf("%d listings in %s logged %d lines, want 1 a second at most:\n%s", polls, elapsed, n, b.logText())
	}

	onA <- data[1000:]
	close(onA)
	onB <- data[2000:]
	close(onB)
	for name, done := range map[string]<-chan result{"A": doneA, "B": doneB} {
		if res := <-done; res.err != nil || res.code != http.StatusOK {
			t.Errorf("upload through %s with Redis down: %+v", name, res)
		}
	}
}
