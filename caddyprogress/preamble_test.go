package caddyprogress

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// Every progress route refuses a method it does not take the same way,
// from the one preamble: 405, the methods it takes in Allow, and a JSON
// error that names the method and says what the route takes. A POST to
// <status_path><id> is one of them: a reservation names no ID.
func TestProgressRoutesRefuseMethodsTheyDoNotTake(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, nginxOptions, up.host)
	for _, tc := range []struct {
		method, path, allow, says string
	}{
		{http.MethodPost, DefaultStatusPath + "some-id", "GET, HEAD, POST", "GET " + DefaultStatusPath + "<id> reads a status"},
		{http.MethodDelete, DefaultStatusPath + "some-id", "GET, HEAD, POST", "GET " + DefaultStatusPath + "<id> reads a status"},
		{http.MethodPut, DefaultStatusPath + "?group=g-1", "GET, HEAD, POST", "GET " + DefaultStatusPath + "?group=<id> reads a group's status"},
		{http.MethodHead, DefaultEventsPath + "some-id", "GET", "GET " + DefaultEventsPath + "<id> streams events"},
		{http.MethodPost, DefaultEventsPath + "?group=g-1", "GET", "GET " + DefaultEventsPath + "?group=<id> streams a group's events"},
		{http.MethodPost, DefaultWSPath + "some-id", "GET", "a WebSocket upgrade (GET " + DefaultWSPath + "<id>, over HTTP/1.1) follows an upload"},
		{http.MethodDelete, DefaultWSPath + "?group=g-1", "GET", "a WebSocket upgrade (GET " + DefaultWSPath + "<id>, over HTTP/1.1) follows a group"},
		{http.MethodPost, "/progress?X-Progress-ID=some-id", "GET, HEAD", "GET /progress?X-Progress-ID=<id> reads a progress report"},
	} {
		resp, body := p.upload(t, tc.method, tc.path, nil, 0, nil)
		var answer struct{ Error string }
		_ = json.Unmarshal(body, &answer)
		want := "method " + tc.method + " not allowed here: " + tc.says
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != tc.allow ||
			(tc.method != http.MethodHead && !strings.HasPrefix(answer.Error, want)) {
			t.Errorf("%s %s: %d, Allow %q, %s; want 405, Allow %q, %q", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Allow"), body, tc.allow, want)
		}
	}
	if up.requests.Load() != 0 {
		t.Fatal("a refused request reached the upstream")
	}
}
