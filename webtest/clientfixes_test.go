package webtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
)

// reload loads the site's config again, which ends its event streams
// (as any reload does); for use off the test's goroutine.
func (s *site) reload() error {
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(s.caddyfile), nil)
	if err != nil {
		return fmt.Errorf("adapting: %w", err)
	}
	return caddy.Load(cfg, true)
}

// countStreams counts, in window.probe, the event streams' opens and
// connection errors.
const countStreams = `window.probe = { opens: 0, errors: 0 };
	const NativeEventSource = window.EventSource;
	window.EventSource = class extends NativeEventSource {
		constructor(...args) {
			super(...args);
			this.addEventListener("open", () => window.probe.opens++);
			this.addEventListener("error", (ev) => { if (!ev.data) window.probe.errors++; });
		}
	};`

// TestClientReconnectsABrokenEventStream reloads Caddy mid-upload, which
// ends the event stream: the client lets EventSource reconnect and
// carries on over events, without polling.
func TestClientReconnectsABrokenEventStream(t *testing.T) {
	s := startSite(t, "rate_limit 1MiB")
	const size, id = 4 << 20, "reconnect-1"
	reloaded := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if resp, err := http.Get(s.base + caddyprogress.DefaultStatusPath + id); err == nil {
				var st caddyprogress.Status
				_ = json.NewDecoder(resp.Body).Decode(&st)
				resp.Body.Close()
				if st.Received >= 1<<20 {
					reloaded <- s.reload()
					return
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		reloaded <- fmt.Errorf("the upload never reached 1 MiB")
	}()
	run := runClient(t, s, clientCall{setup: countStreams, size: size, url: "/upload", options: map[string]any{"id": id, "pollInterval": 100}})
	if err := <-reloaded; err != nil {
		t.Fatalf("reloading mid-upload: %v", err)
	}
	if run.Error != nil {
		t.Fatalf("the upload failed: %+v", run.Error)
	}
	var probe struct{ Opens, Errors int }
	if err := json.Unmarshal(run.Probe, &probe); err != nil || probe.Errors < 1 || probe.Opens < 2 {
		t.Fatalf("event stream opens and errors %s (%v); want the stream broken and opened again", run.Probe, err)
	}
	checkProgress(t, run.Reports, "events", size)
	if run.Result.Answer.SHA256 != generatedSHA256(size) {
		t.Errorf("answer %+v; want sha256 %s", run.Result.Answer, generatedSHA256(size))
	}
}

// TestClientPassesAHeadersObject sends the X-Upload-Group header in a
// Headers object (which object spread turned into nothing): the upload
// joins the group.
func TestClientPassesAHeadersObject(t *testing.T) {
	s := startSite(t, "")
	run := runClient(t, s, clientCall{
		setup: `window.extraOptions = { headers: new Headers({ "X-Upload-Group": "headers-object" }) };`,
		size:  1000,
		url:   "/upload",
	})
	if run.Error != nil {
		t.Fatalf("the upload failed: %+v", run.Error)
	}
	resp, err := http.Get(s.base + caddyprogress.DefaultStatusPath + "?group=headers-object")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var g caddyprogress.GroupStatus
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil || resp.StatusCode != 200 || len(g.Uploads) != 1 || g.Uploads[0].ID != run.Result.ID {
		t.Fatalf("group headers-object: %d %+v (%v); want the upload %s in it", resp.StatusCode, g, err, run.Result.ID)
	}
}

// TestClientReportsFilesErrorAndUpstreamStatus: reports carry the parts
// of a multipart upload, and the error and upstream status of a failed
// one.
func TestClientReportsFilesErrorAndUpstreamStatus(t *testing.T) {
	s := startSite(t, "rate_limit 2MiB")
	const size = 1 << 20
	run := runClient(t, s, clientCall{
		setup: `window.makeBody = (bytes) => {
			const form = new FormData();
			form.append("title", "holiday");
			form.append("file", new Blob([bytes]), "photo.bin");
			return form;
		};`,
		size: size,
		url:  "/upload",
	})
	if run.Error != nil {
		t.Fatalf("the upload failed: %+v", run.Error)
	}
	final := run.Reports[len(run.Reports)-1]
	if final.Status != "complete" || len(final.Files) != 2 || final.UpstreamStatus == nil || *final.UpstreamStatus != 200 || final.Error != nil {
		t.Fatalf("final report %+v; want complete, two files, upstream_status 200, no error", final)
	}
	file := final.Files[1]
	if file.Field != "file" || file.Filename == nil || *file.Filename != "photo.bin" || file.Received != size || file.Status != "complete" {
		t.Errorf("the file's part: %+v", file)
	}
	if title := final.Files[0]; title.Field != "title" || title.Filename != nil || title.Received != int64(len("holiday")) {
		t.Errorf("the title's part: %+v", title)
	}

	failed := runClient(t, s, clientCall{size: 1000, url: "/upload?status=500"})
	if failed.Error == nil || len(failed.Reports) == 0 {
		t.Fatalf("the failing upload: %+v", failed)
	}
	last := failed.Reports[len(failed.Reports)-1]
	if last.Status != "error" || last.UpstreamStatus == nil || *last.UpstreamStatus != 500 || last.Error == nil || *last.Error == "" {
		t.Errorf("the failed upload's last report %+v; want error, upstream_status 500 and an error message", last)
	}
}

// TestClientCancelsBeforeTheReservationAnswers aborts at once: the
// promise rejects as cancelled with no upload sent.
func TestClientCancelsBeforeTheReservationAnswers(t *testing.T) {
	s := startSite(t, "")
	run := runClient(t, s, clientCall{setup: `window.onStarted = (controller) => controller.abort();`, size: 1000, url: "/upload"})
	if run.Error == nil || run.Error.Kind != "cancelled" || len(run.Reports) != 0 {
		t.Fatalf("cancelled before the reservation: %+v", run)
	}
}

// TestClientCancelsWhileTheBackendProcesses aborts once every byte is in
// and the backend is still working: the promise rejects at once, and
// the server records the upload as aborted.
func TestClientCancelsWhileTheBackendProcesses(t *testing.T) {
	s := startSite(t, "")
	run := runClient(t, s, clientCall{setup: `window.abortOnStatus = "processing";`, size: 64 << 10, url: "/upload?delay=5s"})
	if run.Error == nil || run.Error.Kind != "cancelled" {
		t.Fatalf("cancelled while processing: %+v", run)
	}
	if run.MS > 4000 {
		t.Errorf("the promise rejected after %.0f ms; want it before the backend's 5 s delay ends", run.MS)
	}
	id := run.Reports[0].ID
	waitUntil(t, func() bool { return s.status(t, id).Status == "aborted" })
}

// TestClientCancelsWhileWaitingForTheFinalStatus aborts 100 ms after
// the backend answered, while the client waits (up to 3 s) for the
// server's final status: the wait ends at once and the promise rejects
// as cancelled. The backend answers after 1 s, so that the client's
// first poll, sent as the upload starts, reads it in flight (with an
// instant answer that poll could already read it complete), and polls
// come a minute apart, so no final status comes before the wait.
func TestClientCancelsWhileWaitingForTheFinalStatus(t *testing.T) {
	s := startSite(t, "")
	run := runClient(t, s, clientCall{
		setup: `window.probe = { answeredAt: 0, abortedAt: 0 };
			const t0 = performance.now();
			window.onStarted = (controller) => { window.uploadController = controller; };
			const nativeFetch = window.fetch;
			window.fetch = async (...args) => {
				const response = await nativeFetch(...args);
				if (String(args[0]).includes("delay=")) {
					window.probe.answeredAt = performance.now() - t0;
					setTimeout(() => { window.probe.abortedAt = performance.now() - t0; window.uploadController.abort(); }, 100);
				}
				return response;
			};`,
		size:    1000,
		url:     "/upload?delay=1s",
		options: map[string]any{"useEvents": false, "pollInterval": 60000},
	})
	if run.Error == nil || run.Error.Kind != "cancelled" {
		t.Fatalf("cancelled while waiting for the final status: %+v", run)
	}
	var probe struct{ AnsweredAt, AbortedAt float64 }
	if err := json.Unmarshal(run.Probe, &probe); err != nil || probe.AnsweredAt < 900 || probe.AbortedAt < probe.AnsweredAt {
		t.Fatalf("the backend answered at %.0f ms and the cancel came at %.0f ms (%v); want the answer after its 1 s delay, then the cancel", probe.AnsweredAt, probe.AbortedAt, err)
	}
	for _, r := range run.Reports {
		if r.Status == "complete" || r.Status == "error" || r.Status == "aborted" {
			t.Fatalf("the client saw the final status %q before the cancel: %+v", r.Status, run.Reports)
		}
	}
	if late := run.MS - probe.AbortedAt; late > 1000 {
		t.Errorf("the promise rejected %.0f ms after the cancel; want at once, not after the 3 s wait", late)
	}
}

const tokenSite = "status_access token\n\t\ttoken_secret a-webtest-secret-of-32-bytes-xx\n\t\trate_limit 2MiB"

// TestClientWithTokens: with status_access token the client takes the
// reservation's token and follows the upload over events (?token=) and
// by polling (Authorization: Bearer); without it the status is hidden.
func TestClientWithTokens(t *testing.T) {
	s := startSite(t, tokenSite)
	const size = 3 << 20
	for _, tc := range []struct{ via, setup string }{{"events", ""}, {"polling", "delete window.EventSource;"}} {
		run := runClient(t, s, clientCall{setup: tc.setup, size: size, url: "/upload", options: map[string]any{"pollInterval": 100}})
		if run.Error != nil {
			t.Fatalf("%s: the upload failed: %+v", tc.via, run.Error)
		}
		checkProgress(t, run.Reports, tc.via, size)
		if run.Result.Answer.SHA256 != generatedSHA256(size) {
			t.Errorf("%s: answer %+v", tc.via, run.Result.Answer)
		}
		if st := s.status(t, run.Result.ID); st.Status != "unknown" {
			t.Errorf("%s: without the token, the status reads %q; want unknown", tc.via, st.Status)
		}
	}

	// with an ID of its own and no token for it, the server keeps not
	// the ID (issue 15: a client's ID needs its token) but makes one, and
	// the client follows that with the answer's X-Upload-Token
	run := runClient(t, s, clientCall{size: 1000, url: "/upload", options: map[string]any{"id": "own-id-with-token"}})
	if run.Error != nil || run.Result.Final == nil || run.Result.Final.Status != "complete" {
		t.Fatalf("own ID in token mode: %+v", run)
	}
	if run.Result.ID == "own-id-with-token" || len(run.Result.ID) != 22 || run.Result.Final.ID != run.Result.ID {
		t.Errorf("own ID without its token: the upload went as %q (final report of %q); want a fresh ID of the server's", run.Result.ID, run.Result.Final.ID)
	}
}
