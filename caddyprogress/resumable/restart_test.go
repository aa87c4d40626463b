package resumable_test

import (
	"net/http"
	"testing"
)

// A paused upload is known as soon as Caddy is back after a restart, from
// what is on disk: its status reads paused at the stored offset, before
// its client sends anything (before, it read unknown until then).
func TestPausedUploadIsKnownFromTheDiskAfterARestart(t *testing.T) {
	back := newBackend(t)
	p := newProxy(t, back, "")
	first := p.startChild(t)
	data := payload(1000)
	path := p.create(t, len(data), "")
	if resp, body := p.patch(t, path, 0, data[:400]); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("first PATCH: %d %s", resp.StatusCode, body)
	}
	id := idOf(path)
	if code, s := p.status(t, id); code != http.StatusOK || s.Status != "paused" || s.Received != 400 {
		t.Fatalf("before the restart: %d %+v", code, s)
	}

	_ = first.Process.Kill()
	_ = first.Wait()
	p.startChild(t)

	code, s := p.status(t, id)
	if code != http.StatusOK || s.Status != "paused" || s.Received != 400 || s.Total == nil || *s.Total != 1000 ||
		s.Resumable == nil || s.Resumable.Offset != 400 {
		t.Fatalf("after the restart, before any request of the client: %d %+v %+v", code, s, s.Resumable)
	}
	// and the upload goes on from there, delivered whole
	if resp, body := p.patch(t, path, 400, data[400:]); resp.StatusCode/100 != 2 {
		t.Fatalf("last PATCH: %d %s", resp.StatusCode, body)
	}
	assertDeliveredOnce(t, back, data)
}
