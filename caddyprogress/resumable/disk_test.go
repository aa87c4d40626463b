package resumable_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// chunked is a body of unknown length: Go's client sends it with
// Transfer-Encoding: chunked, and the server sees ContentLength -1.
func chunked(data []byte) io.Reader { return io.MultiReader(bytes.NewReader(data)) }

// deferredUpload creates an upload of deferred length and returns its path.
func (p *proxy) deferredUpload(t testing.TB) string {
	t.Helper()
	resp, body := p.tusRequest(t, http.MethodPost, "/files/", map[string]string{"Upload-Defer-Length": "1"}, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("creation with a deferred length: %d %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	return loc[strings.Index(loc, "/files/"):]
}

// send sends one request with Tus-Resumable and the given headers and
// body (any reader; one of unknown length goes chunked).
func (p *proxy) send(t testing.TB, method, path string, header map[string]string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, p.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// uploadFiles lists the files of uploads in the folder (data, tusd's
// info and locks, records), by name.
func uploadFiles(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// dataOnDisk is the bytes every upload's data file in dir takes.
func dataOnDisk(t testing.TB, dir string) int64 {
	t.Helper()
	var total int64
	for _, name := range uploadFiles(t, dir) {
		if strings.Contains(name, ".") {
			continue // .info, .lock, .delivery
		}
		fi, err := os.Stat(dir + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		total += fi.Size()
	}
	return total
}

// headOffset is the Upload-Offset a HEAD of the upload answers.
func (p *proxy) headOffset(t testing.TB, path string) int64 {
	t.Helper()
	resp, _ := p.tusRequest(t, http.MethodHead, path, nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD %s: %d", path, resp.StatusCode)
	}
	n, err := strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64)
	if err != nil {
		t.Fatalf("HEAD %s: Upload-Offset %q", path, resp.Header.Get("Upload-Offset"))
	}
	return n
}

// Bodies without a length (chunked) count against max_disk as they are
// written: five uploads of deferred length each send a chunked PATCH of
// 10 MB into a store of 30 MiB. Three fit; the fourth stops at the room
// left, the fifth stores nothing, both get 507; HEAD gives what each
// stored, which is what its file holds, and the store never holds more
// than max_disk.
func TestChunkedBodiesStopAtMaxDisk(t *testing.T) {
	const maxDisk = 30 << 20
	back := newBackend(t)
	p := startProxy(t, back, "max_size 10MiB\n\t\t\tmax_disk 30MiB")
	data := payload(10_000_000)

	var paths []string
	for range 5 {
		paths = append(paths, p.deferredUpload(t))
	}
	var codes []int
	for i, path := range paths {
		resp, body := p.send(t, http.MethodPatch, path, map[string]string{
			"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}, chunked(data))
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == http.StatusInsufficientStorage {
			assertJSONError(t, fmt.Sprintf("chunked PATCH %d", i+1), body, "max_disk")
		}
	}
	want := []int{204, 204, 204, 507, 507}
	if fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Errorf("chunked PATCHes of 10 MB into 30 MiB: %v, want %v", codes, want)
	}
	if used := dataOnDisk(t, p.dir); used > maxDisk {
		t.Errorf("the store holds %d bytes, over max_disk (%d)", used, maxDisk)
	}
	var stored int64
	for i, path := range paths {
		offset := p.headOffset(t, path)
		fi, err := osStat(p.dir, idOf(path))
		if err != nil || fi.Size() != offset {
			t.Errorf("upload %d: HEAD says %d bytes, its file holds %v (%v)", i+1, offset, fi.Size(), err)
		}
		if offset > 0 && !bytes.Equal(readUpload(t, p.dir, idOf(path)), data[:offset]) {
			t.Errorf("upload %d: the %d bytes stored are not the first ones sent", i+1, offset)
		}
		stored += offset
	}
	if stored != maxDisk {
		t.Errorf("the uploads stored %d bytes together, want the whole room (%d)", stored, maxDisk)
	}

	// A chunked creation-with-upload in the full store: 507, and nothing
	// of it stays on disk (its client never learnt its URL).
	before := uploadFiles(t, p.dir)
	resp, body := p.send(t, http.MethodPost, "/files/", map[string]string{"Upload-Defer-Length": "1",
		"Content-Type": "application/offset+octet-stream"}, chunked(payload(1<<20)))
	if resp.StatusCode != http.StatusInsufficientStorage {
		t.Errorf("chunked creation-with-upload in a full store: %d %s, want 507", resp.StatusCode, body)
	}
	if after := uploadFiles(t, p.dir); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a refused creation left files: before %v, after %v", before, after)
	}
	if got := back.got(); len(got) != 0 {
		t.Errorf("the backend got %d deliveries, want none", len(got))
	}
}

// A chunked creation-with-upload of deferred length past max_size gets
// 413 and leaves nothing on disk; so does a PATCH of a deferred length
// past max_size (chunked or not), whose upload can never finish.
func TestChunkedBodiesPastMaxSizeLeaveNothing(t *testing.T) {
	back := newBackend(t)
	p := startProxy(t, back, "max_size 10MiB\n\t\t\tmax_disk 30MiB")
	p.create(t, 10, "") // makes the folder
	before := uploadFiles(t, p.dir)

	resp, body := p.send(t, http.MethodPost, "/files/", map[string]string{"Upload-Defer-Length": "1",
		"Content-Type": "application/offset+octet-stream"}, chunked(payload(11<<20)))
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked creation-with-upload of 11 MiB: %d %s, want 413", resp.StatusCode, body)
	}
	if after := uploadFiles(t, p.dir); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the refused creation left files: before %v, after %v", before, after)
	}

	path := p.deferredUpload(t)
	resp, body = p.send(t, http.MethodPatch, path, map[string]string{
		"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}, chunked(payload(11<<20)))
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked PATCH of 11 MiB: %d %s, want 413", resp.StatusCode, body)
	}
	if after := uploadFiles(t, p.dir); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the refused upload left files: before %v, after %v", before, after)
	}
	if resp, _ := p.tusRequest(t, http.MethodHead, path, nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD of the upload refused past max_size: %d, want 404", resp.StatusCode)
	}
	_, s := p.status(t, idOf(path))
	if s.Status != "aborted" || !strings.Contains(s.Error, "max_size") {
		t.Errorf("status of the upload refused past max_size: %+v, want aborted saying max_size", s)
	}

	// with a Content-Length too, which tusd does not compare with
	// max_size for a deferred length: 9 MiB fit, 2 more do not
	path = p.deferredUpload(t)
	if resp, body := p.patch(t, path, 0, payload(9<<20)); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH of 9 MiB: %d %s", resp.StatusCode, body)
	}
	resp, body = p.patch(t, path, 9<<20, payload(2<<20))
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("PATCH with a Content-Length past max_size: %d %s, want 413", resp.StatusCode, body)
	}
	assertJSONError(t, "PATCH past max_size", body, "max_size")
	if after := uploadFiles(t, p.dir); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the upload refused past max_size left files: before %v, after %v", before, after)
	}
}

// Creations that send no byte hold their reservation for reserve_for,
// not for expire: three uploads of 10 MiB fill a 30 MiB store, and a
// 1 KB creation gets 507 until their reservations lapse; then it is
// accepted, and the three can still be sent (each reserves again).
func TestEmptyCreationsHoldTheStoreOnlyForReserveFor(t *testing.T) {
	back := newBackend(t)
	p := startProxy(t, back, "max_size 10MiB\n\t\t\tmax_disk 30MiB\n\t\t\treserve_for 1s")
	var paths []string
	for range 3 {
		paths = append(paths, p.create(t, 10<<20, ""))
	}
	small := map[string]string{"Upload-Length": "1000"}
	if resp, body := p.tusRequest(t, http.MethodPost, "/files/", small, nil); resp.StatusCode != http.StatusInsufficientStorage {
		t.Fatalf("1 KB creation while the store is reserved: %d %s, want 507", resp.StatusCode, body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, body := p.tusRequest(t, http.MethodPost, "/files/", small, nil)
		if resp.StatusCode == http.StatusCreated {
			break
		}
		if resp.StatusCode != http.StatusInsufficientStorage || time.Now().After(deadline) {
			t.Fatalf("1 KB creation: %d %s; the empty creations still hold the store", resp.StatusCode, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	data := payload(10 << 20)
	resp, body := p.patch(t, paths[0], 0, data)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("sending a lapsed upload whole: %d %s, want the backend's 201", resp.StatusCode, body)
	}
	assertDeliveredOnce(t, back, data)
	// the other two hold nothing beyond their bytes: 20 MiB is free
	// until one of them sends, then its length is reserved again
	resp, body = p.patch(t, paths[1], 0, data[:1000])
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH of another lapsed upload: %d %s", resp.StatusCode, body)
	}
}

// readUpload is the data tusd stored for upload id.
func readUpload(t testing.TB, dir, id string) []byte {
	t.Helper()
	b, err := os.ReadFile(dir + "/" + id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
