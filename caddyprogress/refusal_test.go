package caddyprogress

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/ratelog"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// With handle_errors, a refusal runs the error routes with its status
// code and message, as request_body's 413 does.
func TestRefusalsGoThroughHandleErrors(t *testing.T) {
	up := newUpstream(t)
	handleErrors := "\thandle_errors {\n\t\trespond \"handled {err.status_code}: {err.message}\" {err.status_code}\n\t}"
	p := startProxy(t, "", up.host, handleErrors)

	resp, body := p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {"not valid!"}})
	want := "handled 400: X-Upload-ID header: upload ID has a character that is not allowed at position 4 (allowed: A-Z a-z 0-9 . _ ~ : -)"
	if resp.StatusCode != 400 || string(body) != want {
		t.Fatalf("invalid ID with handle_errors: %d %q, want 400 %q", resp.StatusCode, body, want)
	}
	if up.requests.Load() != 0 {
		t.Fatal("the upstream got a refused upload")
	}

	resp, body = p.upload(t, http.MethodDelete, DefaultStatusPath+"some-id", nil, 0, nil)
	if resp.StatusCode != 405 || !strings.HasPrefix(string(body), "handled 405: method DELETE not allowed here") || resp.Header.Get("Allow") != "GET, HEAD, POST" {
		t.Fatalf("DELETE on the status route with handle_errors: %d %q %v", resp.StatusCode, body, resp.Header)
	}
}

// Without handle_errors, the client gets the JSON body.
func TestRefusalsWithoutHandleErrorsAnswerJSON(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "", up.host)
	resp, body := p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {"not valid!"}})
	var answer map[string]string
	if err := json.Unmarshal(body, &answer); err != nil || resp.StatusCode != 400 ||
		answer["error"] != "X-Upload-ID header: upload ID has a character that is not allowed at position 4 (allowed: A-Z a-z 0-9 . _ ~ : -)" ||
		resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("invalid ID: %d %q (%v)", resp.StatusCode, body, err)
	}
}

// A client sending bad requests in a loop cannot flood the log.
func TestRefusalsAreLoggedAtMostOnceASecond(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	h := &Handler{logger: zap.New(core), refusalLog: new(ratelog.Gate)}
	req := httptest.NewRequest(http.MethodPost, "/upload?token=secret", strings.NewReader("x"))
	for range 50 {
		h.logRefusal(req, http.StatusBadRequest, errors.New("upload ID is empty"))
	}
	if n := logs.Len(); n != 1 {
		t.Fatalf("50 refusals in a row logged %d times, want 1", n)
	}
	fields := logs.All()[0].ContextMap()
	if fields["status"] != int64(400) || fields["path"] != "/upload" || fields["error"] != "upload ID is empty" {
		t.Fatalf("log entry %v", fields)
	}
	// a second later, the next one is logged
	time.Sleep(time.Second) // the gate lets the next line through a second later
	h.logRefusal(req, http.StatusBadRequest, errors.New("upload ID is empty"))
	if n := logs.Len(); n != 2 {
		t.Fatalf("a refusal a second later: %d entries, want 2", n)
	}
}
