package webtest

import "testing"

// TestClientFollowsAWebSocket uploads with transport "websocket":
// progress and the final state arrive over the WebSocket route, and the
// promise resolves with the backend's answer.
func TestClientFollowsAWebSocket(t *testing.T) {
	s := startSite(t, "rate_limit 2MiB")
	const size = 3 << 20
	run := runClient(t, s, clientCall{size: size, url: "/upload", options: map[string]any{"transport": "websocket"}})
	if run.Error != nil {
		t.Fatalf("the upload failed: %+v", run.Error)
	}
	r := run.Result
	if r.HTTPStatus != 200 || r.Answer.Bytes != size || r.Answer.SHA256 != generatedSHA256(size) || r.Answer.UploadID != r.ID {
		t.Errorf("result: %d %+v; want 200, %d bytes, sha256 %s, upload_id %s", r.HTTPStatus, r.Answer, size, generatedSHA256(size), r.ID)
	}
	checkProgress(t, run.Reports, "websocket", size)
	if r.Final == nil || r.Final.Status != "complete" || r.Final.Via != "websocket" {
		t.Errorf("result.final is %+v; want the complete status, via the WebSocket", r.Final)
	}
}

// TestClientFallsBackFromAWebSocketToEvents uploads with transport
// "websocket" and a WebSocket path that is no WebSocket (the demo
// page's folder has no such file): the client follows over events.
func TestClientFallsBackFromAWebSocketToEvents(t *testing.T) {
	s := startSite(t, "rate_limit 2MiB")
	const size = 3 << 20
	run := runClient(t, s, clientCall{size: size, url: "/upload", options: map[string]any{"transport": "websocket", "wsPath": "/no-such-ws/"}})
	if run.Error != nil {
		t.Fatalf("the upload failed: %+v", run.Error)
	}
	if run.Result.Answer.SHA256 != generatedSHA256(size) {
		t.Errorf("answer %+v; want sha256 %s", run.Result.Answer, generatedSHA256(size))
	}
	checkProgress(t, run.Reports, "events", size)
}
