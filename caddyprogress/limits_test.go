package caddyprogress

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingStream is a ResponseWriter that keeps what is written to it.
type recordingStream struct {
	header http.Header
	buf    bytes.Buffer
}

func (r *recordingStream) Header() http.Header         { return r.header }
func (r *recordingStream) Write(p []byte) (int, error) { return r.buf.Write(p) }
func (r *recordingStream) WriteHeader(int)             {}
func (r *recordingStream) Flush()                      {}

// largeForm is the form of issue 9: 1,000 parts whose field and file
// names are 250 bytes long (627 KB).
func largeForm(t testing.TB, boundary string) []byte {
	parts := make([]formPart, maxParts)
	for i := range parts {
		name := fmt.Sprintf("%03d", i) + strings.Repeat("n", 247)
		parts[i] = formPart{field: name, filename: fileName(name), content: []byte("x")}
	}
	return buildForm(t, boundary, parts)
}

func TestGroupTakesAtMostMaxGroupUploads(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "max_group_uploads 2", up.host)
	for _, id := range []string{"m1", "m2", "m3"} {
		resp, _ := p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {id}, "X-Upload-Group": {"capped"}})
		if resp.StatusCode != 200 {
			t.Fatalf("upload %s answered %d", id, resp.StatusCode)
		}
		p.waitForStatus(t, id, "complete") // each is tracked
	}
	code, g := p.getGroupStatus(t, "capped")
	if code != 200 || len(g.Uploads) != 2 || g.Uploads[0].ID != "m1" || g.Uploads[1].ID != "m2" || g.Received != 8 {
		t.Fatalf("group past max_group_uploads 2: %d %+v", code, g)
	}
}

// The reproduction of issue 9: the status of one form of 1,000 parts
// with 250-byte names (627 KB) is 560 KB, and a group of 61 such uploads
// (38 MB sent) answered 34 MB, built whole for every GET: eight GETs at
// once took the proxy from 57 MB to 1,240 MB. A group's status now
// carries no files (each member's own status does) and is written
// member by member from the members' shared documents.
func TestGroupStatusCarriesNoFiles(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "max_memory 128MiB", up.host) // keeps the 61 finished forms (34 MB): the default keeps 32 MiB

	body := largeForm(t, curlBoundary)
	const members, atOnce = 61, 8
	var wg sync.WaitGroup
	sem := make(chan struct{}, atOnce)
	for i := range members {
		id := fmt.Sprintf("form-%02d", i)
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			header := formHeader(id, curlBoundary)
			header.Set("X-Upload-Group", "forms")
			resp, _ := p.upload(t, http.MethodPost, "/", bytes.NewReader(body), int64(len(body)), header)
			if resp.StatusCode != 200 {
				t.Errorf("upload %s answered %d", id, resp.StatusCode)
			}
		})
	}
	wg.Wait()
	resp, err := p.client.Get(p.base + DefaultStatusPath + "form-00")
	if err != nil {
		t.Fatal(err)
	}
	own, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var s Status
	if err := json.Unmarshal(own, &s); err != nil || len(s.Files) != maxParts {
		t.Fatalf("a member's own status has %d files (%v), want %d", len(s.Files), err, maxParts)
	}

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	answers := make([][]byte, atOnce)
	for i := range answers {
		wg.Go(func() {
			resp, err := p.client.Get(p.base + DefaultStatusPath + "?group=forms")
			if err != nil {
				t.Error(err)
				return
			}
			answers[i], _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		})
	}
	wg.Wait()
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	group := answers[0]
	var g GroupStatus
	if err := json.Unmarshal(group, &g); err != nil || len(g.Uploads) != members || g.Status != "complete" || g.Received != members*int64(len(body)) {
		t.Fatalf("group status %.300s (%v)", group, err)
	}
	for _, m := range g.Uploads {
		if m.Files != nil {
			t.Fatalf("group member %s carries %d files", m.ID, len(m.Files))
		}
	}
	t.Logf("form body %d bytes: its status %d bytes; the group of %d: %d bytes, %d GETs at once allocated %d bytes in all",
		len(body), len(own), members, len(group), atOnce, allocated)
	if len(group) > members*1024 {
		t.Fatalf("group status is %d bytes for %d members; want at most 1 KiB a member", len(group), members)
	}
	if allocated > 8<<20 {
		t.Fatalf("%d group GETs at once allocated %d bytes; want under 8 MiB", atOnce, allocated)
	}
}

func TestReservationsHaveTheirOwnCap(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "max_reservations 2", up.host)
	for i := range 2 {
		resp, err := p.client.Post(p.base+DefaultStatusPath, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("reservation %d answered %d", i, resp.StatusCode)
		}
	}
	resp, err := p.client.Post(p.base+DefaultStatusPath, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var answer struct{ Error string }
	json.NewDecoder(resp.Body).Decode(&answer)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(answer.Error, "too many IDs are reserved") {
		t.Fatalf("third reservation: %d, Retry-After %q, %+v; want 503 with Retry-After and an error", resp.StatusCode, resp.Header.Get("Retry-After"), answer)
	}
}

func TestReservationNeverEvictsFinishedRecords(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "max_uploads 2\n\t\tmax_reservations 2", up.host)
	for _, id := range []string{"kept-1", "kept-2"} {
		p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {id}})
		p.waitForStatus(t, id, "complete")
	}
	resp, err := p.client.Post(p.base+DefaultStatusPath, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("reservation in a full tracker answered %d, want 503", resp.StatusCode)
	}
	for _, id := range []string{"kept-1", "kept-2"} {
		if code, _ := p.getStatus(t, id); code != 200 {
			t.Fatalf("finished record %s answered %d after a reservation; want it kept", id, code)
		}
	}
	// an upload does make room, finished records first
	p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {"kept-3"}})
	if code, _ := p.getStatus(t, "kept-1"); code != http.StatusNotFound {
		t.Fatalf("oldest finished record answered %d after an upload in a full tracker, want 404", code)
	}
}

// reconnect asks an events route the way EventSource reconnects, with
// Last-Event-ID, and returns the status code.
func (p *proxy) reconnect(t *testing.T, path string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, p.base+path, nil)
	req.Header.Set("Last-Event-ID", "4")
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestReconnectToAnEndedUploadGets204(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "", up.host)
	p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {"ended"}, "X-Upload-Group": {"ended-group"}})
	p.waitForStatus(t, "ended", "complete")

	// the first request still gets the final event
	if events := p.subscribe(t, "ended").all(t, 5*time.Second); len(events) != 1 || events[0].name != "complete" {
		t.Fatalf("first request: %+v, want one complete event", events)
	}
	if events := subscribeURL(t, p.client, p.base+DefaultEventsPath+"?group=ended-group").all(t, 5*time.Second); len(events) != 1 || events[0].name != "complete" {
		t.Fatalf("first group request: %+v, want one complete event", events)
	}
	for _, path := range []string{
		DefaultEventsPath + "ended",
		DefaultEventsPath + "never-seen",
		DefaultEventsPath + "?group=ended-group",
		DefaultEventsPath + "?group=never-seen",
	} {
		if code := p.reconnect(t, path); code != http.StatusNoContent {
			t.Fatalf("reconnect to %s answered %d, want 204", path, code)
		}
	}

	// a reconnect to a reservation still streams
	resp, err := p.client.Post(p.base+DefaultStatusPath, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var r shortStatus
	json.NewDecoder(resp.Body).Decode(&r)
	resp.Body.Close()
	req, _ := http.NewRequest(http.MethodGet, p.base+DefaultEventsPath+r.ID, nil)
	req.Header.Set("Last-Event-ID", "0")
	stream, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	stream.Body.Close()
	if stream.StatusCode != 200 {
		t.Fatalf("reconnect to a reserved ID answered %d, want 200", stream.StatusCode)
	}
}

// A body read still under way when the upload ends is not counted: the
// final record, the final event and the bytes metric agree.
func TestCountingStopsWhenTheRecordIsFinal(t *testing.T) {
	tr := newTracker("final")
	defer tr.Destruct()
	u, err := tr.start("final", -1, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	body := &countingBody{ReadCloser: io.NopCloser(endless{}), upload: u}
	buf := make([]byte, 32<<10)
	body.Read(buf)
	before := u.snapshot(time.Now())
	tr.finish(u, progress.StateComplete, 200, "", time.Minute)
	body.Read(buf) // the proxy's transport, still inside Read
	after := u.snapshot(time.Now())
	if before.Received != 32<<10 || after.Received != before.Received {
		t.Fatalf("received %d before the end, %d after a read that came after it; want 32768 both", before.Received, after.Received)
	}
	if _, counted := tr.stats(); counted != 32<<10 {
		t.Fatalf("bytes metric %d, want the 32768 the record shows", counted)
	}
}

// An upstream that answers before it has read the whole body, while the
// client keeps sending: what the final event carries is what every
// later poll shows.
func TestFinalRecordNeverChanges(t *testing.T) {
	early := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.CopyN(io.Discard, r.Body, 64<<10)
		w.WriteHeader(http.StatusOK)
	}))
	defer early.Close()
	p := startProxyWithAdmin(t, "\t\ttracker final-record", strings.TrimPrefix(early.URL, "http://"))
	events := p.subscribe(t, "early")
	events.next(t, 5*time.Second) // pending
	data := payload(4 << 20)
	req, _ := http.NewRequest(http.MethodPost, p.base+"/", &pacedReader{data: data, chunk: 32 << 10, pause: time.Millisecond})
	req.ContentLength = int64(len(data))
	req.Header.Set("X-Upload-ID", "early")
	if resp, err := p.client.Do(req); err == nil {
		resp.Body.Close()
	}
	all := events.all(t, 10*time.Second)
	final := all[len(all)-1].status(t)
	if final.FinishedAt == nil {
		t.Fatalf("last event %+v is not final", final)
	}
	time.Sleep(300 * time.Millisecond) // any read still under way is over
	_, polled := p.getStatus(t, "early")
	if polled.Received != final.Received || polled.Status != final.Status {
		t.Fatalf("final event: %s %d received; a later poll: %s %d", final.Status, final.Received, polled.Status, polled.Received)
	}
	p.scrapeMetrics(t).want(t, "after", float64(final.Received), "received_bytes_total", "final-record")
}

// A progress tick that finds the upload ended sends the named final
// event instead, exactly once, and never a progress event with a final
// status.
func TestProgressThatFindsTheEndSendsTheFinalEventOnce(t *testing.T) {
	u := newUpload("ending", 100, time.Now(), progress.StateUploading)
	w := &recordingStream{header: http.Header{}}
	sub := newSubscriber(&eventStream{w: w, rc: http.NewResponseController(w)}, followRecord(record{live: u}))
	u.addReceived(40)
	if err := sub.progress(); err != nil {
		t.Fatal(err)
	}
	u.addReceived(60)
	u.finish(progress.StateComplete, 200, "", time.Now())
	if err := sub.progress(); err != errStreamEnded {
		t.Fatalf("progress after the end: %v, want errStreamEnded", err)
	}
	sub.progress()
	sub.progress()
	out := w.buf.String()
	if n := strings.Count(out, "event: complete\n"); n != 1 {
		t.Fatalf("%d final events in %q, want 1", n, out)
	}
	if n := strings.Count(out, "data: "); n != 2 {
		t.Fatalf("%d events in %q, want one progress and one final", n, out)
	}
	if progress, _, _ := strings.Cut(out, "event: complete"); strings.Contains(progress, `"status":"complete"`) {
		t.Fatalf("a progress event carries the final status: %q", out)
	}
}
