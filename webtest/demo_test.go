package webtest

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDemoPageUploads20MiBWithMovingBarAndBackendHash picks a 20 MiB file
// on the demo page, with upload_progress's rate_limit at 5 MiB/s, and
// checks that both bars pass through values between 0 and 100 on their way to 100, that
// the page shows the SHA-256 the backend computed, and that the server
// tracked the upload under the ID the page shows.
func TestDemoPageUploads20MiBWithMovingBarAndBackendHash(t *testing.T) {
	ctx := newTab(t)
	s := startSite(t, "rate_limit 5MiB")
	const size = 20 << 20
	path, wantSHA := writePayload(t, "twenty-mib.bin", size)

	start := time.Now()
	pickFiles(t, ctx, s.base+"/", path)
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](
		`Number(document.getElementById("overall-bar").getAttribute("aria-valuenow")) >= 40`,
		chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(60*time.Second)))
	if err != nil {
		t.Fatalf("waiting for the overall bar to reach 40 %%: %v", err)
	}
	screenshot(t, ctx, "demo-20MiB-uploading.png")

	gotSHA, err := chromedp.Run(ctx, chromedp.Poll[string](
		`document.querySelector(".upload .sha256")?.textContent || document.querySelector(".upload .error:not([hidden])")?.textContent`,
		chromedp.WithPollingInterval(100*time.Millisecond),
		chromedp.WithPollingTimeout(60*time.Second)))
	if err != nil {
		t.Fatalf("waiting for the backend's answer on the page: %v", err)
	}
	took := time.Since(start)
	time.Sleep(500 * time.Millisecond) // the bars' width transition lasts 0.2s
	screenshot(t, ctx, "demo-20MiB-done.png")

	if gotSHA != wantSHA {
		t.Fatalf("the page shows SHA-256 %q; want %q (sha256 of the file)", gotSHA, wantSHA)
	}
	if took < 2*time.Second {
		t.Errorf("the upload took %s; rate_limit 5MiB should make it last about 4s", took)
	}

	bars, err := chromedp.Run(ctx, chromedp.Evaluate[seenBars](`window.seenBars`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("upload took %s; overall bar went %v; file bar went %v", took, bars.Overall, bars.File)
	checkBar(t, "overall", bars.Overall)
	checkBar(t, "file", bars.File)

	texts, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`({
		percent: document.getElementById("overall-percent").textContent,
		bytes: document.querySelector(".upload .bytes").textContent,
		id: document.querySelector(".upload .id").textContent,
		state: document.querySelector(".upload").dataset.state,
		detail: document.querySelector(".upload .detail").textContent,
	})`))
	if err != nil {
		t.Fatal(err)
	}
	if texts["percent"] != "100 %" {
		t.Errorf("overall percent reads %q; want \"100 %%\"", texts["percent"])
	}
	if texts["bytes"] != "20,971,520 bytes" {
		t.Errorf("the backend's byte count reads %q; want \"20,971,520 bytes\"", texts["bytes"])
	}
	if texts["state"] != "done" {
		t.Errorf("the upload's state is %q (%q); want done", texts["state"], texts["detail"])
	}

	st := s.status(t, texts["id"])
	if st.Status != "complete" || st.Received != size || st.Total == nil || *st.Total != size {
		t.Errorf("the server's status for %q: %s, received %d, total %v; want complete, %d of %d",
			texts["id"], st.Status, st.Received, st.Total, size, size)
	}
	if st.RateLimit == nil || *st.RateLimit != 5<<20 {
		t.Errorf("the server's status for %q has rate_limit %v; want %d", texts["id"], st.RateLimit, 5<<20)
	}
}

// TestDemoPageUploadsSeveralFilesWithAnOverallBar picks three files at
// once: each gets its own bar and its backend hash, and the overall bar,
// the sum of the three, moves to 100.
func TestDemoPageUploadsSeveralFilesWithAnOverallBar(t *testing.T) {
	ctx := newTab(t)
	s := startSite(t, "rate_limit 2MiB")
	files := []struct {
		name string
		size int
	}{{"four.bin", 4 << 20}, {"two.bin", 2 << 20}, {"one.bin", 1 << 20}}
	var paths []string
	want := map[string]string{}
	for _, f := range files {
		path, sum := writePayload(t, f.name, f.size)
		paths = append(paths, path)
		want[f.name] = sum
	}

	pickFiles(t, ctx, s.base+"/", paths...)
	waitSettled(t, ctx)
	time.Sleep(500 * time.Millisecond) // the bars' width transition lasts 0.2s
	screenshot(t, ctx, "demo-three-files-done.png")

	uploads, err := chromedp.Run(ctx, chromedp.Evaluate[[]pageUpload](readUploads))
	if err != nil {
		t.Fatal(err)
	}
	if len(uploads) != len(files) {
		t.Fatalf("the page lists %d uploads; want %d: %+v", len(uploads), len(files), uploads)
	}
	for _, u := range uploads {
		if u.State != "done" || u.SHA256 != want[u.Name] {
			t.Errorf("%s: %s, SHA-256 %q (%s); want done, %s", u.Name, u.State, u.SHA256, u.Error, want[u.Name])
		}
	}

	bars, err := chromedp.Run(ctx, chromedp.Evaluate[seenBars](`window.seenBars`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("overall bar went %v", bars.Overall)
	checkBar(t, "overall", bars.Overall)

	texts, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[
		document.getElementById("overall-title").textContent,
		document.getElementById("overall-detail").textContent,
	]`))
	if err != nil {
		t.Fatal(err)
	}
	if texts[0] != "3 files, 7.0 MiB" || texts[1] != "7.0 MiB received · 3 of 3 done" {
		t.Errorf("the overall card reads %q, %q; want %q, %q", texts[0], texts[1], "3 files, 7.0 MiB", "7.0 MiB received · 3 of 3 done")
	}
}

// TestDemoPageShowsBackendErrorsInPlainWords uploads to a backend that
// answers 500: the file is marked failed, with a sentence saying so.
func TestDemoPageShowsBackendErrorsInPlainWords(t *testing.T) {
	ctx := newTab(t)
	s := startSite(t, "")
	path, _ := writePayload(t, "doomed.bin", 100<<10)

	pickFiles(t, ctx, s.base+"/?target="+url.QueryEscape("/upload?status=500"), path)
	waitSettled(t, ctx)
	time.Sleep(500 * time.Millisecond) // the bars' width transition lasts 0.2s
	screenshot(t, ctx, "demo-backend-error.png")

	uploads, err := chromedp.Run(ctx, chromedp.Evaluate[[]pageUpload](readUploads))
	if err != nil {
		t.Fatal(err)
	}
	const want = "The server could not process the upload (error 500)."
	if len(uploads) != 1 || uploads[0].State != "failed" || uploads[0].Error != want {
		t.Errorf("the page shows %+v; want one failed upload saying %q", uploads, want)
	}
}

// TestDemoPageCancelsAnUpload clicks Cancel half way through an upload:
// the page says so, and the server records the upload as aborted.
func TestDemoPageCancelsAnUpload(t *testing.T) {
	ctx := newTab(t)
	s := startSite(t, "rate_limit 2MiB")
	path, _ := writePayload(t, "cancelled.bin", 8<<20)

	pickFiles(t, ctx, s.base+"/", path)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](
		`Number(document.querySelector(".upload .bar")?.getAttribute("aria-valuenow")) >= 10`,
		chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("waiting for the bar to reach 10 %%: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(".upload .cancel"))); err != nil {
		t.Fatalf("clicking Cancel: %v", err)
	}
	waitSettled(t, ctx)

	uploads, err := chromedp.Run(ctx, chromedp.Evaluate[[]pageUpload](readUploads))
	if err != nil {
		t.Fatal(err)
	}
	if len(uploads) != 1 || uploads[0].State != "failed" || uploads[0].Error != "The upload was cancelled." {
		t.Fatalf("the page shows %+v; want one failed upload saying %q", uploads, "The upload was cancelled.")
	}
	id, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector(".upload").dataset.id`))
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return s.status(t, id).Status == "aborted" })
	if st := s.status(t, id); st.Received >= 8<<20 {
		t.Errorf("the server received %d bytes of a cancelled upload; want fewer than %d", st.Received, 8<<20)
	}
}

// TestDemoPageWorksByPolling uploads on the page with ?events=off: the
// bar moves by polling the status route, and the hash arrives.
func TestDemoPageWorksByPolling(t *testing.T) {
	ctx := newTab(t)
	s := startSite(t, "rate_limit 2MiB")
	path, want := writePayload(t, "polled.bin", 4<<20)

	pickFiles(t, ctx, s.base+"/?events=off", path)
	waitSettled(t, ctx)

	uploads, err := chromedp.Run(ctx, chromedp.Evaluate[[]pageUpload](readUploads))
	if err != nil {
		t.Fatal(err)
	}
	if len(uploads) != 1 || uploads[0].State != "done" || uploads[0].SHA256 != want {
		t.Errorf("the page shows %+v; want one done upload with SHA-256 %s", uploads, want)
	}
	bars, err := chromedp.Run(ctx, chromedp.Evaluate[seenBars](`window.seenBars`))
	if err != nil {
		t.Fatal(err)
	}
	checkBar(t, "file", bars.File)

	// what the page asked for, by the browser's resource timing
	requests, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`performance.getEntriesByType("resource").map((e) => new URL(e.name).pathname)`))
	if err != nil {
		t.Fatal(err)
	}
	polls, streams := 0, 0
	for _, path := range requests {
		switch {
		case strings.HasPrefix(path, "/upload/status/") && path != "/upload/status/":
			polls++
		case strings.HasPrefix(path, "/upload/events/"):
			streams++
		}
	}
	if polls < 3 || streams != 0 {
		t.Errorf("the page polled the status %d times and opened %d event streams; want at least 3 and none: %v", polls, streams, requests)
	}
}
