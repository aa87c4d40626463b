package webtest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
)

// uploadScript runs the statements %[5]s, then uploadWithProgress in the
// page on a generated body of %[1]d bytes (byte i is i %% 251), posted to
// %[2]q with the options %[3]s (JSON). With %[4]d > 0 it cancels once
// the server reports that many bytes. Setup statements may set, on
// window: extraOptions (merged into the options, for what JSON cannot
// carry, such as a Headers object), makeBody(bytes) (the body to send
// instead of a Blob), onStarted(controller) (called as soon as the
// upload is started), abortOnStatus (cancel on the first report with
// that status), and probe (returned as is). It returns what clientRun
// decodes.
const uploadScript = `(async () => {
	%[5]s
	const { uploadWithProgress } = await import("/upload-progress.js");
	const body = new Uint8Array(%[1]d);
	for (let i = 0; i < body.length; i++) body[i] = i %% 251;
	const abortAt = %[4]d;
	const controller = new AbortController();
	const reports = [];
	const options = Object.assign(%[3]s, window.extraOptions ?? {}, {
		signal: controller.signal,
		onProgress: (p) => {
			reports.push(p);
			if (abortAt > 0 && p.received >= abortAt) controller.abort();
			if (p.status === window.abortOnStatus) controller.abort();
		},
	});
	const started = performance.now();
	try {
		const upload = uploadWithProgress(%[2]q, window.makeBody ? window.makeBody(body) : new Blob([body]), options);
		window.onStarted?.(controller);
		const result = await upload;
		return { result, reports, probe: window.probe ?? null, ms: performance.now() - started };
	} catch (e) {
		return { error: { name: e.name, kind: e.kind, message: e.message, httpStatus: e.httpStatus, id: e.id }, reports, probe: window.probe ?? null, ms: performance.now() - started };
	}
})()`

// progress is one report to onProgress.
type progress struct {
	ID        string   `json:"id"`
	Status    string   `json:"status"`
	Received  int64    `json:"received"`
	Total     *int64   `json:"total"`
	Percent   *int64   `json:"percent"`
	Speed     int64    `json:"speed"`
	Remaining *float64 `json:"remaining"`
	Via       string   `json:"via"`

	Files []struct {
		Field    string  `json:"field"`
		Filename *string `json:"filename"`
		Received int64   `json:"received"`
		Status   string  `json:"status"`
	} `json:"files"`
	Error          *string `json:"error"`
	UpstreamStatus *int    `json:"upstream_status"`
}

// clientRun is what uploadScript returns: a result or an error, and
// every progress report.
type clientRun struct {
	Result *struct {
		ID         string    `json:"id"`
		HTTPStatus int       `json:"httpStatus"`
		Answer     answer    `json:"answer"`
		Final      *progress `json:"final"`
	} `json:"result"`
	Error *struct {
		Name       string `json:"name"`
		Kind       string `json:"kind"`
		Message    string `json:"message"`
		HTTPStatus *int   `json:"httpStatus"`
		ID         string `json:"id"`
	} `json:"error"`
	Reports []progress      `json:"reports"`
	Probe   json.RawMessage `json:"probe"` // window.probe, as set by the setup
	MS      float64         `json:"ms"`    // how long uploadWithProgress took, in milliseconds
}

// answer is the demo backend's answer.
type answer struct {
	Bytes    int64  `json:"bytes"`
	SHA256   string `json:"sha256"`
	UploadID string `json:"upload_id"`
}

// clientCall is what runClient runs in the page.
type clientCall struct {
	setup   string         // statements to run first, e.g. "delete window.EventSource;"
	size    int            // bytes to upload
	url     string         // where to
	options map[string]any // uploadWithProgress's options, as JSON
	abortAt int            // if > 0, cancel once the server has this many bytes
}

// runClient opens the site's page and runs uploadScript there.
func runClient(t *testing.T, s *site, c clientCall) clientRun {
	t.Helper()
	ctx := newTab(t)
	if c.options == nil {
		c.options = map[string]any{}
	}
	opts, err := json.Marshal(c.options)
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(s.base+"/")); err != nil {
		t.Fatalf("opening the page: %v", err)
	}
	run, err := chromedp.Run(ctx, chromedp.Evaluate[clientRun](
		fmt.Sprintf(uploadScript, c.size, c.url, opts, c.abortAt, c.setup), chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("running uploadWithProgress in the page: %v", err)
	}
	return run
}

// generatedSHA256 is the SHA-256 of uploadScript's body of size bytes.
func generatedSHA256(size int) string {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i % 251)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// checkProgress checks that the reports came the expected way, never
// went backwards, passed through at least two values strictly between 0
// and size, and ended complete at 100 %.
func checkProgress(t *testing.T, reports []progress, via string, size int64) {
	t.Helper()
	between := 0
	var last int64
	for _, p := range reports {
		if p.Via != via {
			t.Errorf("a report came via %q; want %q: %+v", p.Via, via, p)
		}
		if p.Received < last {
			t.Errorf("received went backwards, from %d to %d", last, p.Received)
		}
		last = p.Received
		if p.Status == "uploading" && p.Received > 0 && p.Received < size {
			between++
			if p.Speed <= 0 || p.Remaining == nil {
				t.Errorf("an uploading report without speed or remaining time: %+v", p)
			}
		}
	}
	if between < 2 {
		t.Errorf("%d reports between 0 and %d bytes; want at least 2: %+v", between, size, reports)
	}
	if len(reports) == 0 {
		t.Fatal("no progress reports")
	}
	final := reports[len(reports)-1]
	if final.Status != "complete" || final.Received != size || final.Percent == nil || *final.Percent != 100 {
		t.Errorf("the last report is %+v; want complete, %d bytes, 100 %%", final, size)
	}
}

// validReservedID is the shape of the IDs the server makes.
var validReservedID = regexp.MustCompile(`^[A-Za-z0-9_-]{22}$`)

// TestClientFollowsEventsAndResolvesWithTheAnswer uploads with
// EventSource available: the ID is reserved, progress arrives over
// events, and the promise resolves with the backend's answer.
func TestClientFollowsEventsAndResolvesWithTheAnswer(t *testing.T) {
	s := startSite(t, "rate_limit 2MiB")
	const size = 3 << 20
	run := runClient(t, s, clientCall{size: size, url: "/upload"})
	if run.Error != nil {
		t.Fatalf("the upload failed: %+v", run.Error)
	}
	r := run.Result
	if !validReservedID.MatchString(r.ID) {
		t.Errorf("upload ID %q is not one the server reserved", r.ID)
	}
	if r.HTTPStatus != 200 || r.Answer.Bytes != size || r.Answer.SHA256 != generatedSHA256(size) || r.Answer.UploadID != r.ID {
		t.Errorf("result: %d %+v; want 200, %d bytes, sha256 %s, upload_id %s", r.HTTPStatus, r.Answer, size, generatedSHA256(size), r.ID)
	}
	checkProgress(t, run.Reports, "events", size)
	if r.Final == nil || r.Final.Status != "complete" {
		t.Errorf("result.final is %+v; want the complete status", r.Final)
	}
}

// TestClientPollsWhereEventSourceIsMissing uploads in a page without
// EventSource: progress comes from polling the status route.
func TestClientPollsWhereEventSourceIsMissing(t *testing.T) {
	s := startSite(t, "rate_limit 2MiB")
	const size = 3 << 20
	run := runClient(t, s, clientCall{
		setup:   "delete window.EventSource;",
		size:    size,
		url:     "/upload",
		options: map[string]any{"pollInterval": 100},
	})
	if run.Error != nil {
		t.Fatalf("the upload failed: %+v", run.Error)
	}
	if run.Result.Answer.SHA256 != generatedSHA256(size) {
		t.Errorf("answer %+v; want sha256 %s", run.Result.Answer, generatedSHA256(size))
	}
	checkProgress(t, run.Reports, "polling", size)
}

// TestClientPollsWhenTheEventStreamFails uploads with an events path
// that does not stream (the demo page's folder has no such file): the
// client falls back to polling.
func TestClientPollsWhenTheEventStreamFails(t *testing.T) {
	s := startSite(t, "rate_limit 2MiB")
	const size = 3 << 20
	run := runClient(t, s, clientCall{
		size:    size,
		url:     "/upload",
		options: map[string]any{"eventsPath": "/no-such-events/", "pollInterval": 100},
	})
	if run.Error != nil {
		t.Fatalf("the upload failed: %+v", run.Error)
	}
	if run.Result.Answer.SHA256 != generatedSHA256(size) {
		t.Errorf("answer %+v; want sha256 %s", run.Result.Answer, generatedSHA256(size))
	}
	checkProgress(t, run.Reports, "polling", size)
}

// TestClientUsesTheCallersID sends the caller's own ID instead of
// reserving one.
func TestClientUsesTheCallersID(t *testing.T) {
	s := startSite(t, "")
	run := runClient(t, s, clientCall{size: 1000, url: "/upload", options: map[string]any{"id": "my-own-id-1"}})
	if run.Error != nil {
		t.Fatalf("the upload failed: %+v", run.Error)
	}
	if run.Result.ID != "my-own-id-1" || run.Result.Answer.UploadID != "my-own-id-1" {
		t.Errorf("result ID %q, backend saw %q; want my-own-id-1 for both", run.Result.ID, run.Result.Answer.UploadID)
	}
	if st := s.status(t, "my-own-id-1"); st.Status != "complete" || st.Received != 1000 {
		t.Errorf("status of my-own-id-1: %s, %d bytes; want complete, 1000", st.Status, st.Received)
	}
}

// TestClientRejectsInPlainWordsWhenTheBackendFails uploads to a backend
// that answers 500.
func TestClientRejectsInPlainWordsWhenTheBackendFails(t *testing.T) {
	s := startSite(t, "")
	run := runClient(t, s, clientCall{size: 1000, url: "/upload?status=500"})
	if run.Error == nil {
		t.Fatalf("the upload succeeded: %+v; want an error", run.Result)
	}
	e := run.Error
	const want = "The server could not process the upload (error 500)."
	if e.Name != "UploadError" || e.Kind != "http" || e.HTTPStatus == nil || *e.HTTPStatus != 500 || e.Message != want {
		t.Errorf("error %+v; want UploadError, kind http, httpStatus 500, message %q", e, want)
	}
	if st := s.status(t, e.ID); st.Status != "error" || st.UpstreamStatus == nil || *st.UpstreamStatus != 500 {
		t.Errorf("status of %q: %s, upstream %v; want error, 500", e.ID, st.Status, st.UpstreamStatus)
	}
}

// TestClientCancelsWithTheSignal aborts an upload half way: the promise
// rejects as cancelled and the server records the upload as aborted.
func TestClientCancelsWithTheSignal(t *testing.T) {
	// The kernel's socket buffers and Chromium's own can hold some MiB
	// already sent when the cancel comes; the server still reads those.
	// 32 MiB at 4 MiB/s leaves room for them and still ends in seconds.
	const size = 32 << 20
	s := startSite(t, "rate_limit 4MiB")
	run := runClient(t, s, clientCall{size: size, url: "/upload", abortAt: 1 << 20})
	if run.Error == nil {
		t.Fatalf("the upload succeeded: %+v; want it cancelled", run.Result)
	}
	if run.Error.Kind != "cancelled" || run.Error.Message != "The upload was cancelled." {
		t.Errorf("error %+v; want kind cancelled, message %q", run.Error, "The upload was cancelled.")
	}
	if len(run.Reports) == 0 {
		t.Fatal("no progress reports before the cancel")
	}
	id := run.Reports[0].ID
	var st caddyprogress.Status
	waitUntil(t, func() bool {
		st = s.status(t, id)
		return st.Status == "aborted"
	})
	if st.Received >= size {
		t.Errorf("the server received %d bytes of a cancelled upload; want fewer than %d", st.Received, size)
	}
}
