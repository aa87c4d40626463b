package caddyprogress

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestClientIDFromEachPlace(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "", up.host)
	for _, tc := range []struct {
		name   string
		path   string
		header http.Header
		id     string
	}{
		{"id_header", "/", http.Header{"X-Upload-Id": {"from-header"}}, "from-header"},
		{"X-Progress-ID header", "/", http.Header{"X-Progress-Id": {"from.progress~header"}}, "from.progress~header"},
		{"id_query", "/?X-Progress-ID=from:query", nil, "from:query"},
		{"id_header wins", "/?X-Progress-ID=q1", http.Header{"X-Upload-Id": {"h1"}, "X-Progress-Id": {"h2"}}, "h1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := p.upload(t, http.MethodPost, tc.path, strings.NewReader("data"), 4, tc.header)
			if resp.StatusCode != 200 {
				t.Fatalf("upload answered %d", resp.StatusCode)
			}
			if got := resp.Header.Get("X-Upload-ID"); got != tc.id {
				t.Fatalf("response X-Upload-ID = %q, want %q", got, tc.id)
			}
			got, ok := up.get(tc.id)
			if !ok || got.bytes != 4 || got.header.Get("X-Upload-ID") != tc.id {
				t.Fatalf("upstream did not get the upload with X-Upload-ID %q", tc.id)
			}
			p.waitForStatus(t, tc.id, "complete")
		})
	}
}

func TestServerMakesAnIDWhenNoneIsGiven(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "", up.host)
	resp, _ := p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, nil)
	id := resp.Header.Get("X-Upload-ID")
	if err := validateID(id); err != nil || len(id) != 22 {
		t.Fatalf("server-made ID %q: %v (want 22 characters, 128 bits)", id, err)
	}
	if _, ok := up.get(id); !ok {
		t.Fatalf("upstream did not get X-Upload-ID %q", id)
	}
	p.waitForStatus(t, id, "complete")

	resp2, _ := p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, nil)
	if id2 := resp2.Header.Get("X-Upload-ID"); id2 == id {
		t.Fatalf("two uploads got the same ID %q", id)
	}
}

func TestInvalidIDsAreRefused(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "", up.host)
	for _, tc := range []struct {
		name   string
		path   string
		header http.Header
	}{
		{"too long", "/", http.Header{"X-Upload-Id": {strings.Repeat("a", 129)}}},
		{"bad characters", "/", http.Header{"X-Upload-Id": {"no/slashes"}}},
		{"space", "/", http.Header{"X-Progress-Id": {"a b"}}},
		{"empty header", "/", http.Header{"X-Upload-Id": {""}}},
		{"empty query", "/?X-Progress-ID=", nil},
		{"bad query", "/?X-Progress-ID=%3Cscript%3E", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := p.upload(t, http.MethodPost, tc.path, strings.NewReader("data"), 4, tc.header)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("answered %d, want 400", resp.StatusCode)
			}
			var e struct{ Error string }
			if err := json.Unmarshal(body, &e); err != nil || !strings.Contains(e.Error, "upload ID") {
				t.Fatalf("body %q is not a JSON error about the upload ID", body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type = %q", ct)
			}
		})
	}
	if n := up.requests.Load(); n != 0 {
		t.Fatalf("upstream saw %d requests with invalid IDs", n)
	}
	// a 128-character ID is fine
	long := strings.Repeat("Z", 128)
	if resp, _ := p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {long}}); resp.StatusCode != 200 {
		t.Fatalf("128-character ID answered %d", resp.StatusCode)
	}
	if code, _ := p.getStatus(t, "bad%20id"); code != http.StatusBadRequest {
		t.Fatalf("status of an invalid ID answered %d, want 400", code)
	}
}

func TestDuplicateInFlightIDIsConflict(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "", up.host)
	first := &pacedReader{data: payload(2 << 20), chunk: 64 << 10, stopAt: 1 << 20, release: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.upload(t, http.MethodPost, "/", first, 2<<20, http.Header{"X-Upload-Id": {"dup"}})
	}()
	p.waitFor(t, "dup", "1 MiB received", func(_ int, s Status) bool { return s.Received == 1<<20 })

	resp, body := p.upload(t, http.MethodPost, "/", strings.NewReader("second"), 6, http.Header{"X-Upload-Id": {"dup"}})
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), `"error"`) {
		t.Fatalf("duplicate answered %d %s, want 409 with a JSON error", resp.StatusCode, body)
	}
	close(first.release)
	<-done
	p.waitForStatus(t, "dup", "complete")
	if got, _ := up.get("dup"); got.bytes != 2<<20 {
		t.Fatalf("upstream got %d bytes for dup, want only the first upload's %d", got.bytes, 2<<20)
	}
	if n := up.requests.Load(); n != 1 {
		t.Fatalf("upstream saw %d requests, want 1", n)
	}

	// once finished, the ID may be used again, and the new upload replaces the record
	resp, _ = p.upload(t, http.MethodPost, "/", strings.NewReader("again"), 5, http.Header{"X-Upload-Id": {"dup"}})
	if resp.StatusCode != 200 {
		t.Fatalf("reusing a finished ID answered %d", resp.StatusCode)
	}
	if s := p.waitForStatus(t, "dup", "complete"); s.Received != 5 {
		t.Fatalf("record after reuse shows %d bytes, want 5", s.Received)
	}
}

func TestReserveAnID(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "retain 1s", up.host)
	resp, err := p.client.Post(p.base+DefaultStatusPath, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var r shortStatus
	json.NewDecoder(resp.Body).Decode(&r)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || r.Status != "pending" || validateID(r.ID) != nil {
		t.Fatalf("reservation answered %d %+v", resp.StatusCode, r)
	}
	if code, s := p.getStatus(t, r.ID); code != 200 || s.Status != "pending" {
		t.Fatalf("reserved ID reads %d %+v, want pending", code, s)
	}
	up2, _ := p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {r.ID}})
	if up2.StatusCode != 200 {
		t.Fatalf("upload with the reserved ID answered %d", up2.StatusCode)
	}
	p.waitForStatus(t, r.ID, "complete")

	// an unused reservation lasts retain
	resp, _ = p.client.Post(p.base+DefaultStatusPath, "", nil)
	json.NewDecoder(resp.Body).Decode(&r)
	resp.Body.Close()
	time.Sleep(2 * time.Second)
	if code, s := p.getStatus(t, r.ID); code != http.StatusNotFound || s.Status != "unknown" {
		t.Fatalf("reservation after retain reads %d %+v, want 404 unknown", code, s)
	}
}
