package caddyprogress

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// The Throttling example of the docs, run as written (only its address
// and upstream changed): guests' uploads pass the first handler, which
// tracks them at 256KiB/s, and then the second, which leaves their ID
// and record alone and adds its own 4MiB/s; everyone else's go through
// the second alone. Every upload reaches the backend intact under one
// ID, and a guest's is held to the guests' limit. Before, the second
// handler saw the ID the first had set and answered 409.
func TestThrottlingExampleRunsAsWritten(t *testing.T) {
	example := readmeBlock(t, "@guests")
	up := newUpstream(t)
	port := testcaddy.FreePort(t)
	site := fmt.Sprintf("http://127.0.0.1:%d", port)
	config := strings.Replace(strings.Replace(example, ":8080", site, 1), "localhost:9000", up.host, 1)
	if config == example {
		t.Fatalf("the example has no :8080 or localhost:9000 to replace:\n%s", example)
	}
	testcaddy.Run(t, testcaddy.GlobalOptions+config)
	p := &proxy{base: site, client: &http.Client{}}

	const size = 320 << 10
	data := payload(size)
	for _, c := range []struct {
		who    string
		header http.Header
	}{
		{"guest", http.Header{"X-Upload-Id": {"guest-1"}}},
		{"user", http.Header{"X-Upload-Id": {"user-1"}, "Authorization": {"Bearer someone"}}},
	} {
		start := time.Now()
		resp, body := p.upload(t, http.MethodPost, "/upload", bytes.NewReader(data), size, c.header)
		took := time.Since(start)
		id := c.header.Get("X-Upload-Id")
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Upload-Id") != id {
			t.Fatalf("%s: %d, X-Upload-ID %q: %s", c.who, resp.StatusCode, resp.Header.Get("X-Upload-Id"), body)
		}
		got, ok := up.get(id)
		if !ok || got.bytes != size || got.sha256 != sha256Hex(data) {
			t.Fatalf("%s: the backend got %+v (found %v), want %d bytes intact", c.who, got, ok, size)
		}
		if s := p.waitForStatus(t, id, "complete"); s.Received != size {
			t.Fatalf("%s: the status says %d bytes, want %d", c.who, s.Received, size)
		}
		// 320 KiB at 256 KiB/s from a drained bucket lasts at least 1 s;
		// a lower bound, which a busy machine only makes easier to meet
		if c.who == "guest" && took < 900*time.Millisecond {
			t.Fatalf("the guest's upload took %v: not held to 256KiB/s", took)
		}
	}
}
