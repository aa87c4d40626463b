package soak

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// resumableOptions put a resumable block (the resumable package's
// delivery in the background) in the soak's handlers.
func resumableOptions(dir string) string {
	return fmt.Sprintf("resumable /files/ {\n\t\t\t\tdir %s\n\t\t\t\tdeliver_to /upload\n\t\t\t\tdeliver_retries 1\n\t\t\t}", dir)
}

// A backend that drops the connection in the middle of its answer to
// half the resumable deliveries, on every attempt (reverse_proxy panics
// with http.ErrAbortHandler, in the request's goroutine for the first
// attempt and in a goroutine of the resumable package for the retry):
// the process lives on, those uploads end in error after their retry,
// and every other upload (the other deliveries, the witness) arrives
// intact.
func TestFaultBackendDropsMidAnswerDuringDeliveries(t *testing.T) {
	px := startProxy(t, resumableOptions(t.TempDir()))
	f := beginFault(t, px)
	n := scale(12, 120)
	done := make(chan struct{})
	go func() {
		defer close(done)
		inParallel(n, 4, func(i int) { px.resumableUpload(t, i, i%2 == 0) })
	}()
	time.Sleep(100 * time.Millisecond)
	f.witness()
	<-done
	f.end()
}

// resumableUpload creates a resumable upload, sends it in one PATCH,
// and checks how it ends: with a broken backend answer, 503 then error
// after the retry; otherwise the backend's answer, the bytes intact.
func (px *proxy) resumableUpload(t *testing.T, i int, broken bool) {
	data := payload(uint64(i), 256<<10)
	req, _ := http.NewRequest(http.MethodPost, px.base+"/files/", nil)
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Length", fmt.Sprint(len(data)))
	if broken {
		req.Header.Set("Upload-Metadata", "fault "+base64.StdEncoding.EncodeToString([]byte("drop-answer")))
	}
	resp, err := px.h1.Do(req)
	if err != nil {
		t.Errorf("upload %d: creating: %v", i, err)
		return
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	id := loc[strings.LastIndex(loc, "/")+1:]
	if resp.StatusCode != http.StatusCreated || id == "" {
		t.Errorf("upload %d: creation answered %d", i, resp.StatusCode)
		return
	}
	req, _ = http.NewRequest(http.MethodPatch, px.base+"/files/"+id, bytes.NewReader(data))
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Offset", "0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	resp, err = px.h1.Do(req)
	if err != nil {
		t.Errorf("upload %d (%s): the final PATCH got no answer: %v", i, id, err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	s, err := px.finalStatus(id, 20*time.Second)
	switch {
	case broken:
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("upload %d (%s), answer broken off: final PATCH %d %s, want 503 with Retry-After", i, id, resp.StatusCode, body)
		}
		if err != nil || s.Status != "error" || s.Resumable == nil || s.Resumable.Delivery != "failed" || s.Resumable.Attempts != 2 {
			t.Errorf("upload %d (%s), answer broken off: %+v (%v), want error after 2 attempts", i, id, s, err)
		}
	default:
		got, ok := px.up.get(id)
		if resp.StatusCode != http.StatusOK || !ok || got.sha256 != sha256Hex(data) || got.bytes != int64(len(data)) {
			t.Errorf("upload %d (%s): final PATCH %d %s; the backend got %+v, want %d bytes with sha256 %s", i, id, resp.StatusCode, body, got, len(data), sha256Hex(data))
		}
		if err != nil || s.Status != "complete" {
			t.Errorf("upload %d (%s): %+v (%v), want complete", i, id, s, err)
		}
		px.up.forget(id)
	}
}
