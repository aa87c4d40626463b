package caddyprogress

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
)

// heldForm sends a form's body but its closing boundary, then waits for
// release.
type heldForm struct {
	body    []byte
	hold    int // bytes sent before the wait
	off     int
	release <-chan struct{}
}

func (h *heldForm) Read(p []byte) (int, error) {
	if h.off == h.hold {
		<-h.release
	}
	if h.off >= len(h.body) {
		return 0, io.EOF
	}
	end := len(h.body)
	if h.off < h.hold {
		end = h.hold
	}
	n := copy(p, h.body[h.off:end])
	h.off += n
	return n, nil
}

// The amplification of issue 15 (section 2): once max_memory is spent,
// an upload's document is not kept, and every read of its group
// encoded each member's whole document, its 1,000 parts included, only
// to write the member without them. A group's read now takes each
// member's head (kept with its record) and never encodes a part; a
// member's own status that has no room is refused with 503 and
// Retry-After, not encoded past max_memory.
func TestGroupReadsOfLiveMembersEncodeNoFiles(t *testing.T) {
	const members, reads = 16, 8
	up := newUpstream(t)
	p := startProxy(t, "tracker held\n\t\tmax_memory 8MiB", up.host)
	body := largeForm(t, curlBoundary)
	closing := []byte("--" + curlBoundary + "--\r\n")
	if !bytes.HasSuffix(body, closing) {
		t.Fatalf("the form does not end with %q", closing)
	}
	hold := len(body) - len(closing)
	release := make(chan struct{})
	var uploads sync.WaitGroup
	for i := range members {
		id := fmt.Sprintf("held-%02d", i)
		uploads.Go(func() {
			header := formHeader(id, curlBoundary)
			header.Set("X-Upload-Group", "held")
			resp, _ := p.upload(t, http.MethodPost, "/", &heldForm{body: body, hold: hold, release: release}, int64(len(body)), header)
			if resp.StatusCode != 200 {
				t.Errorf("upload %s answered %d", id, resp.StatusCode)
			}
		})
	}
	released := false
	defer func() {
		if !released {
			close(release)
		}
		uploads.Wait()
	}()

	// every member holds its parts, in flight
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, g := p.getGroupStatus(t, "held")
		if code == 200 && len(g.Uploads) == members && g.Received == int64(members*hold) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the group did not receive every part within 30s: %d %+v", code, g)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tr := liveTracker("held")
	withFiles := 0
	for i := range members {
		if l := tr.lookup(fmt.Sprintf("held-%02d", i)).live.parts.Load(); l != nil && len(l.statuses()) > 0 {
			withFiles++
		}
	}
	if withFiles == 0 {
		t.Fatal("no member keeps its files: the test shows nothing")
	}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	answers := make([][]byte, reads)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Go(func() {
			resp, err := p.client.Get(p.base + DefaultStatusPath + "?group=held")
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
	for _, a := range answers {
		var g GroupStatus
		if err := json.Unmarshal(a, &g); err != nil || len(g.Uploads) != members || g.Status != "uploading" || g.Received != int64(members*hold) {
			t.Fatalf("group status %.300s (%v)", a, err)
		}
		for _, m := range g.Uploads {
			if m.Files != nil || m.Status != "uploading" || m.Received != int64(hold) {
				t.Fatalf("group member %+v", m)
			}
		}
		if bytes.Contains(a, []byte(`"files"`)) {
			t.Fatalf("a group status carries files: %.300s", a)
		}
	}
	t.Logf("%d members (%d with files), %d group reads at once allocated %d bytes in all", members, withFiles, reads, allocated)
	if allocated > 4<<20 {
		t.Fatalf("%d group reads allocated %d bytes: members' files were encoded", reads, allocated)
	}
	if used, limit := tr.memoryInUse(), tr.memory.budget.Load(); used > limit {
		t.Fatalf("the tracker counts %d bytes, past its max_memory budget %d", used, limit)
	}

	// a member's own status: its files, or 503 with Retry-After
	for i := range members {
		id := fmt.Sprintf("held-%02d", i)
		resp, err := p.client.Get(p.base + DefaultStatusPath + id)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			var s Status
			if err := json.Unmarshal(data, &s); err != nil || s.ID != id || s.Status != "uploading" {
				t.Fatalf("status of %s: %.300s (%v)", id, data, err)
			}
		case http.StatusServiceUnavailable:
			var e struct{ Error string }
			if err := json.Unmarshal(data, &e); err != nil || !strings.Contains(e.Error, "max_memory") || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("status of %s: 503 %q, Retry-After %q", id, data, resp.Header.Get("Retry-After"))
			}
		default:
			t.Fatalf("status of %s: %d %.300s", id, resp.StatusCode, data)
		}
	}
	if used, limit := tr.memoryInUse(), tr.memory.budget.Load(); used > limit {
		t.Fatalf("the tracker counts %d bytes, past its max_memory budget %d", used, limit)
	}

	close(release)
	released = true
	uploads.Wait()
	for i := range members {
		id := fmt.Sprintf("held-%02d", i)
		if got, _ := up.get(id); got.sha256 != sha256Hex(body) {
			t.Fatalf("upload %s did not reach the upstream intact", id)
		}
		if s := p.waitForStatus(t, id, "complete"); s.Received != int64(len(body)) {
			t.Fatalf("upload %s: %+v", id, s)
		}
	}
}

// A document that max_memory has no room for is not made: the status
// route answers 503 with Retry-After and a JSON error, and nothing more
// is counted; with room, the document is made, counted and kept.
func TestDocumentWithoutRoomIsRefusedNotMade(t *testing.T) {
	tr := newTracker("doc-room")
	defer tr.Destruct()
	tr.setMaxMemory(1 << 20)
	u, err := tr.start("form", -1, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	l := newPartList(tr)
	u.parts.Store(l)
	name := strings.Repeat("<", 250)
	for range 100 {
		if _, err := l.add(name, &name); err != nil {
			t.Fatal(err)
		}
	}
	free := tr.memory.budget.Load() - tr.memoryInUse()
	bound := u.docBound()
	if bound <= 0 || bound > free {
		t.Fatalf("bound %d, free %d: the test needs a document that fits", bound, free)
	}
	d := u.doc(time.Now())
	if d == nil || u.liveDoc.Load() != d {
		t.Fatal("a document that fits was not made and kept")
	}
	var s Status
	if err := json.Unmarshal(docJSON(d), &s); err != nil || len(s.Files) != 100 || *s.Files[0].Filename != name {
		t.Fatalf("the document: %v %+v", err, s.Files[:1])
	}
	if got := docBytes(d); got > bound {
		t.Fatalf("the document takes %d bytes, past its bound %d", got, bound)
	}

	// fill max_memory, then let the document go stale
	tr.memory.live.Add(tr.memory.budget.Load() - tr.memoryInUse() - 100)
	u.addReceived(1)
	inUse := tr.memoryInUse()
	if d := u.doc(time.Now().Add(time.Hour)); d != nil {
		t.Fatal("a document was made past max_memory")
	}
	if tr.memoryInUse() != inUse {
		t.Fatalf("a refused document changed the count: %d, was %d", tr.memoryInUse(), inUse)
	}
	rec := httptest.NewRecorder()
	if err := writeRecord(rec, httptest.NewRequest(http.MethodGet, DefaultStatusPath+"form", nil), "form", record{live: u}); err != nil {
		t.Fatal(err)
	}
	var e struct{ Error string }
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error == "" {
		t.Fatalf("status without room: %d, Retry-After %q, %q", rec.Code, rec.Header().Get("Retry-After"), rec.Body.String())
	}
	// a group's read still shows it, from its head
	if m := u.memberDoc(time.Now().Add(time.Hour)); m == nil || len(m.files) != 0 || m.summary.received != 1 {
		t.Fatalf("member document %+v", m)
	}
}

// A live upload's head (its document without files, what groups show)
// fits the room its record reserves for it, with the longest ID and
// every field set.
func TestLiveHeadFitsItsReserve(t *testing.T) {
	u := newUpload(strings.Repeat("a", progress.MaxIDLength), 1<<62, time.Now(), progress.StateUploading)
	u.rateLimit = 1 << 62
	u.addReceived(1 << 30)
	expires := time.Now()
	s := u.liveStatus(time.Now().Add(time.Hour))
	s.Received, s.Speed = 1<<62, 1<<62
	s.Resumable = &progress.ResumableStatus{Offset: 1 << 62, Delivered: 1 << 62, Delivery: "delivering", Attempts: 1 << 30, ExpiresAt: &expires}
	d := encodeDoc(s, u.startedAt, 0)
	t.Logf("the largest live head: %d bytes (%d counted), reserve %d", len(d.head), docBytes(d), headReserveBytes)
	if docBytes(d) > headReserveBytes {
		t.Fatalf("a live head takes %d bytes, past its reserve %d: %s", docBytes(d), headReserveBytes, d.head)
	}
}

// The file list is encoded by hand at its exact size: byte for byte
// what encoding/json makes of it, with every kind of escape.
func TestFilesEncodeAsJSONDoes(t *testing.T) {
	names := []string{"", "plain.txt", `quo"te\back`, "<script>&amp;</script>", "tab\there\nnew\rline\b\f",
		"\x00\x01\x1f\x7f", "é€😀", "\u2028\u2029", "bad\xff\xfeutf8", strings.Repeat("<", 256)}
	var files []FileStatus
	for i, n := range names {
		f := FileStatus{Field: n, Received: int64(i) * 1234567, Status: partUploading}
		if i%2 == 0 {
			name := names[len(names)-1-i]
			f.Filename = &name
			f.Status = partComplete
		}
		files = append(files, f)
	}
	files = append(files, FileStatus{Field: "neg", Received: -1 << 63, Status: partComplete})
	want, err := json.Marshal(files)
	if err != nil {
		t.Fatal(err)
	}
	got := appendFiles(nil, files)
	if string(got) != `,"files":`+string(want) {
		t.Fatalf("appendFiles:\n%s\nwant\n,\"files\":%s", got, want)
	}
	if n := filesJSONLen(files); n != len(got) {
		t.Fatalf("filesJSONLen %d, encoded %d", n, len(got))
	}
	for _, n := range names {
		if q, _ := json.Marshal(n); jsonStringLen(n) != len(q) {
			t.Fatalf("jsonStringLen(%q) = %d, want %d", n, jsonStringLen(n), len(q))
		}
	}
	// the whole document too: the head by encoding/json, then the list
	s := Status{ID: "x", Status: "complete", Files: files}
	whole, _ := json.Marshal(s)
	if d := encodeDoc(s, time.Now(), 0); string(docJSON(d)) != string(whole) {
		t.Fatalf("encodeDoc:\n%s\nwant\n%s", docJSON(d), whole)
	}
}
