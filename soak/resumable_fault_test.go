package soak

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// The deferred-length flood: clients create resumable uploads of
// deferred length and send bodies without a length (chunked over
// HTTP/1.1, and over h2c), some past max_size, some never sending a
// byte, while honest clients send sized uploads. The store must never
// hold more than max_disk, every refusal must be 413 or 507, each honest
// upload that was accepted must reach the upstream intact, and the
// process must come back to its baseline.

const (
	floodMaxSize = 2 << 20
	floodMaxDisk = 8 << 20
)

// startResumableProxy is startProxy with a tus endpoint at /files/
// (max_size 2MiB, max_disk 8MiB, expire 1s, so the flood's leftovers go
// before the baseline is checked), delivering to the upstream.
func startResumableProxy(t *testing.T) (*proxy, string) {
	t.Helper()
	up := newUpstream(t)
	port := testcaddy.FreePort(t)
	p := &proxy{base: fmt.Sprintf("http://127.0.0.1:%d", port), addr: fmt.Sprintf("127.0.0.1:%d", port), up: up}
	dir := filepath.Join(t.TempDir(), "uploads")
	files := fmt.Sprintf(`handle /files/* {
		upload_progress {
			%s
			resumable /files/ {
				dir %s
				max_size %d
				max_disk %d
				expire 1s
				deliver_to /upload
			}
		}
		reverse_proxy %s
	}
	handle {`, soakOptions, dir, floodMaxSize, floodMaxDisk, up.host)
	p.config = strings.Replace(p.caddyfile(""), "handle {", files, 1)
	testcaddy.Run(t, p.config)
	p.h1 = &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}}
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	p.h2c = &http.Client{Transport: &http.Transport{Protocols: &protocols, DisableCompression: true}}
	t.Cleanup(p.closeIdle)
	return p, dir
}

func TestFaultDeferredLengthFlood(t *testing.T) {
	px, dir := startResumableProxy(t)
	// a first round puts the maps' largest sizes in the baseline
	floodDeferred(t, px, dir, 0, nil)
	time.Sleep(2*time.Second + retain)
	f := beginFault(t, px)
	floodDeferred(t, px, dir, 1, f.witness)
	f.end()
	if used := dataBytes(dir); used != 0 {
		t.Errorf("%d bytes of uploads left on disk after expire", used)
	}
}

// floodDeferred runs the flood and the honest uploads, and during (if
// any) meanwhile; it watches the store's size throughout.
func floodDeferred(t *testing.T, px *proxy, dir string, round int, during func()) {
	stopWatch := make(chan struct{})
	var peak atomic.Int64
	var watching sync.WaitGroup
	watching.Go(func() {
		for {
			peak.Store(max(peak.Load(), dataBytes(dir)))
			select {
			case <-stopWatch:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	})

	r := newRand(t)
	clients, perClient := scale(2, 16), scale(12, 25)
	sizes := make([]int64, clients*perClient)
	for i := range sizes {
		sizes[i] = r.Int64N(floodMaxSize * 3 / 2) // a third past max_size
	}
	var codes sync.Map // status code -> *atomic.Int64
	count := func(code int) {
		n, _ := codes.LoadOrStore(code, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
	}
	var work sync.WaitGroup
	work.Go(func() {
		inParallel(len(sizes), clients, func(i int) {
			client := px.h1
			if i%2 == 1 {
				client = px.h2c
			}
			count(px.deferredUpload(t, client, i, sizes[i]))
		})
	})
	honest := scale(4, 16)
	work.Go(func() {
		inParallel(honest, 2, func(i int) {
			px.honestUpload(t, fmt.Sprintf("honest-%d-%d", round, i), 256<<10)
		})
	})
	if during != nil {
		during()
	}
	work.Wait()
	close(stopWatch)
	watching.Wait()

	var summary []string
	codes.Range(func(code, n any) bool {
		summary = append(summary, fmt.Sprintf("%d×%d", n.(*atomic.Int64).Load(), code))
		return true
	})
	t.Logf("%d deferred-length uploads (%s), %d honest uploads; the store's peak %.1f MiB (max_disk %d MiB)",
		len(sizes), strings.Join(summary, " "), honest, float64(peak.Load())/(1<<20), floodMaxDisk>>20)
	if peak.Load() > floodMaxDisk {
		t.Errorf("the store held %d bytes, over max_disk (%d)", peak.Load(), floodMaxDisk)
	}
}

// deferredUpload is one flooding client's upload: created with a
// deferred length; the first of every four sends nothing, the others
// send size bytes without a length. It returns the PATCH's status, or
// the creation's; anything but 201, 204, 413 or 507 fails the test.
func (px *proxy) deferredUpload(t *testing.T, client *http.Client, i int, size int64) int {
	req, _ := http.NewRequest(http.MethodPost, px.base+"/files/", nil)
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Defer-Length", "1")
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("creating a deferred-length upload: %v", err)
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || i%4 == 0 {
		if resp.StatusCode != http.StatusCreated {
			t.Errorf("creating a deferred-length upload: %d", resp.StatusCode)
		}
		return resp.StatusCode
	}
	loc := resp.Header.Get("Location")
	req, _ = http.NewRequest(http.MethodPatch, px.base+loc[strings.Index(loc, "/files/"):], io.MultiReader(generatedBody(uint64(i), size)))
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Offset", "0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	resp, err = client.Do(req)
	if err != nil {
		// the proxy answered 507 or 413 and closed while the body was
		// still being sent: not an answer to check, the store is checked
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusRequestEntityTooLarge, http.StatusInsufficientStorage:
	default:
		t.Errorf("chunked PATCH of %d bytes: %d, want 204, 413 or 507", size, resp.StatusCode)
	}
	return resp.StatusCode
}

// honestUpload sends a sized resumable upload, its creation retried
// while the store is full (507); once created, its bytes must reach the
// upstream intact.
func (px *proxy) honestUpload(t *testing.T, name string, size int) {
	data := payload(uint64(len(name)), size)
	var loc string
	for deadline := time.Now().Add(time.Minute); ; {
		req, _ := http.NewRequest(http.MethodPost, px.base+"/files/", nil)
		req.Header.Set("Tus-Resumable", "1.0.0")
		req.Header.Set("Upload-Length", fmt.Sprint(size))
		resp, err := px.h1.Do(req)
		if err != nil {
			t.Errorf("%s: creating: %v", name, err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusCreated {
			loc = resp.Header.Get("Location")
			break
		}
		if resp.StatusCode != http.StatusInsufficientStorage || time.Now().After(deadline) {
			t.Errorf("%s: creating: %d", name, resp.StatusCode)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	id := loc[strings.LastIndex(loc, "/")+1:]
	req, _ := http.NewRequest(http.MethodPatch, px.base+loc[strings.Index(loc, "/files/"):], strings.NewReader(string(data)))
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Offset", "0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	resp, err := px.h1.Do(req)
	if err != nil {
		t.Errorf("%s: sending: %v", name, err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	got, ok := px.up.get(id)
	px.up.forget(id)
	if resp.StatusCode != http.StatusOK || !ok || got.sha256 != sha256Hex(data) || got.bytes != int64(size) {
		t.Errorf("%s: PATCH %d; the upstream got %+v (%v), want %d bytes with sha256 %s", name, resp.StatusCode, got, ok, size, sha256Hex(data))
	}
}

// dataBytes is what the uploads' data files in dir take (not tusd's
// .info, the locks or the records).
func dataBytes(dir string) int64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var total int64
	for _, e := range entries {
		if strings.Contains(e.Name(), ".") {
			continue
		}
		if fi, err := e.Info(); err == nil {
			total += fi.Size()
		}
	}
	return total
}
