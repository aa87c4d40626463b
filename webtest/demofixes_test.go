package webtest

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Tests of the demo page's fixes of issue 18 ("The demo page"): the
// overall speed, the final time, the speed after Resume, the processing
// state, interrupted uploads listed after a reload, one speed format.

// startResumableSite is startSite with rate_limit and a resumable
// endpoint at /files/ delivering to /upload, as Caddyfile.example has.
func startResumableSite(t *testing.T, rate string) *site {
	t.Helper()
	return startSite(t, fmt.Sprintf("rate_limit %s\n\t\tresumable /files/ {\n\t\t\tdir %q\n\t\t\tdeliver_to /upload\n\t\t}", rate, t.TempDir()))
}

// recordTexts is a script that records, in window.seenTexts, what the
// overall card and every file's list item say each time the page
// changes (one snapshot per change, taken after the page's code ran).
const recordTexts = `
window.seenTexts = [];
new MutationObserver(() => {
	const snap = {
		overall: document.getElementById("overall-detail").textContent,
		files: Array.from(document.querySelectorAll(".upload"), (li) => ({state: li.dataset.state, detail: li.querySelector(".detail").textContent})),
	};
	const last = window.seenTexts[window.seenTexts.length - 1];
	if (!last || JSON.stringify(last) !== JSON.stringify(snap)) window.seenTexts.push(snap);
}).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
`

type textSnapshot struct {
	Overall string `json:"overall"`
	Files   []struct {
		State  string `json:"state"`
		Detail string `json:"detail"`
	} `json:"files"`
}

// speedText finds a speed ("2.0 MiB/s") in a detail line.
var speedText = regexp.MustCompile(`[0-9.]+ (bytes|KiB|MiB|GiB|TiB)/s`)

// pickFilesRecording is pickFiles with recordTexts running as well.
func pickFilesRecording(t *testing.T, ctx context.Context, url string, paths ...string) {
	t.Helper()
	err := chromedp.Do(ctx,
		chromedp.Navigate(url),
		chromedp.WaitReady(chromedp.ID("files")),
		chromedp.Evaluate[chromedp.Void](recordBars),
		chromedp.Evaluate[chromedp.Void](recordTexts),
		chromedp.SetUploadFiles(chromedp.ID("files"), paths),
	)
	if err != nil {
		t.Fatalf("opening the page and picking %v: %v", paths, err)
	}
}

// waitFor polls the page until script is true.
func waitFor(t *testing.T, ctx context.Context, what, script string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](script,
		chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(60*time.Second))); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// TestDemoPageResumableOverallSpeedCountsOnlyFilesStillUploading uploads
// three files in resumable mode, the last one alone once the first two
// are done: while it uploads alone, the overall speed is its speed (the
// finished files' last speeds no longer count), and once all are done
// the overall line shows no speed.
func TestDemoPageResumableOverallSpeedCountsOnlyFilesStillUploading(t *testing.T) {
	ctx := newTab(t)
	s := startResumableSite(t, "2MiB")
	var paths []string
	for _, f := range []struct {
		name string
		size int
	}{{"first.bin", 2 << 20}, {"second.bin", 2 << 20}, {"last.bin", 6 << 20}} {
		path, _ := writePayload(t, f.name, f.size)
		paths = append(paths, path)
	}

	pickFilesRecording(t, ctx, s.base+"/?resumable=on", paths...)
	waitSettled(t, ctx)
	snaps, err := chromedp.Run(ctx, chromedp.Evaluate[[]textSnapshot](`window.seenTexts`))
	if err != nil {
		t.Fatal(err)
	}

	alone := 0
	for _, snap := range snaps {
		var uploading []string
		for _, f := range snap.Files {
			if f.State == "uploading" {
				uploading = append(uploading, f.Detail)
			}
		}
		if len(uploading) != 1 || !strings.Contains(snap.Overall, "2 of 3 done") {
			continue
		}
		alone++
		if got, want := speedText.FindString(snap.Overall), speedText.FindString(uploading[0]); got != want {
			t.Errorf("with one file uploading (%q), the overall line reads %q: speed %q; want that file's %q", uploading[0], snap.Overall, got, want)
		}
	}
	if alone == 0 {
		t.Fatalf("the page never showed the last file uploading alone: %+v", snaps)
	}
	last := snaps[len(snaps)-1].Overall
	if last != "10 MiB received · 3 of 3 done" {
		t.Errorf("at the end the overall line reads %q; want %q (no speed once nothing uploads)", last, "10 MiB received · 3 of 3 done")
	}
}

// TestDemoPageResumableDoneTimeIsTheServersFinal uploads in resumable
// mode: "Done: 4.0 MiB in Y s" shows the elapsed of the upload's final
// status, the server's, not that of the last poll.
func TestDemoPageResumableDoneTimeIsTheServersFinal(t *testing.T) {
	ctx := newTab(t)
	s := startResumableSite(t, "2MiB")
	path, want := writePayload(t, "timed.bin", 4<<20)

	pickFiles(t, ctx, s.base+"/?resumable=on", path)
	waitSettled(t, ctx)
	got, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`({
		id: document.querySelector(".upload").dataset.id,
		detail: document.querySelector(".upload .detail").textContent,
		sha256: document.querySelector(".upload .sha256").textContent,
	})`))
	if err != nil {
		t.Fatal(err)
	}
	if got["sha256"] != want {
		t.Fatalf("the page shows SHA-256 %q; want %q", got["sha256"], want)
	}
	st := s.status(t, got["id"])
	if st.Status != "complete" {
		t.Fatalf("the server's status of %q: %+v; want complete", got["id"], st)
	}
	if wantDetail := fmt.Sprintf("Done: 4.0 MiB in %.1f s", st.Elapsed); got["detail"] != wantDetail {
		t.Errorf("the page reads %q; want %q (the final status says elapsed %v)", got["detail"], wantDetail, st.Elapsed)
	}
}

// afterResume is what the file's detail line said at one moment after
// Resume was clicked.
type afterResume struct {
	At     float64 `json:"at"` // ms since the click
	Detail string  `json:"detail"`
}

// bytesText reads a size or speed as the page writes it ("5.4 MiB").
var bytesText = regexp.MustCompile(`([0-9.]+) (bytes?|KiB|MiB|GiB)`)

// parseBytes returns the number of bytes of the first size in text.
func parseBytes(t *testing.T, text string) float64 {
	t.Helper()
	m := bytesText.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no size in %q", text)
	}
	var n float64
	fmt.Sscan(m[1], &n)
	switch m[2] {
	case "KiB":
		n *= 1 << 10
	case "MiB":
		n *= 1 << 20
	case "GiB":
		n *= 1 << 30
	}
	return n
}

// TestDemoPageSpeedAfterResumeLeavesOutThePause pauses a resumable upload
// for longer than the server's speed window, then resumes it: every
// speed the page shows afterwards is at least half the average since the
// click (the server's own figure would count the pause: a third of it
// half a second after), and the time left agrees with it.
func TestDemoPageSpeedAfterResumeLeavesOutThePause(t *testing.T) {
	ctx := newTab(t)
	s := startResumableSite(t, "1MiB")
	const size = 8 << 20
	path, want := writePayload(t, "paused.bin", size)

	pickFiles(t, ctx, s.base+"/?resumable=on", path)
	waitFor(t, ctx, "the bar to reach 15 %", `Number(document.querySelector(".upload .bar")?.getAttribute("aria-valuenow")) >= 15`)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(".upload .pause"))); err != nil {
		t.Fatalf("clicking Pause: %v", err)
	}
	id, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector(".upload").dataset.id`))
	if err != nil || id == "" {
		t.Fatalf("the page has no upload ID: %q %v", id, err)
	}
	waitUntil(t, func() bool { return s.status(t, id).Status == "paused" })
	paused := float64(s.status(t, id).Received)
	// the pause lasts longer than the server's speed window (3 s)
	time.Sleep(3500 * time.Millisecond)

	err = chromedp.Do(ctx,
		chromedp.Evaluate[chromedp.Void](`
			window.afterResume = [];
			document.querySelector(".upload .pause").addEventListener("click", () => {
				const detail = document.querySelector(".upload .detail"), clicked = performance.now();
				new MutationObserver(() => window.afterResume.push({at: performance.now() - clicked, detail: detail.textContent}))
					.observe(detail, {subtree: true, childList: true, characterData: true});
			}, {capture: true, once: true});`),
		chromedp.Click(chromedp.CSS(".upload .pause")))
	if err != nil {
		t.Fatalf("clicking Resume: %v", err)
	}
	waitSettled(t, ctx)
	sha, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector(".upload .sha256").textContent`))
	if err != nil || sha != want {
		t.Fatalf("the page shows SHA-256 %q (%v); want %q", sha, err, want)
	}
	reports, err := chromedp.Run(ctx, chromedp.Evaluate[[]afterResume](`window.afterResume`))
	if err != nil {
		t.Fatal(err)
	}
	early := 0
	for _, r := range reports {
		// "5.4 MiB of 8.0 MiB · 2.0 MiB/s · 2 s left"
		parts := strings.Split(r.Detail, " · ")
		if len(parts) < 2 || !speedText.MatchString(parts[1]) {
			continue // no speed shown
		}
		received, speed := parseBytes(t, parts[0]), parseBytes(t, parts[1])
		if received-paused < 256<<10 {
			continue // too little since Resume for the page's rounding
		}
		average := (received - paused) / (r.At / 1000)
		if r.At < 3000 {
			early++
		}
		if speed < average/2 {
			t.Errorf("%.0f ms after Resume the page reads %q; the average since Resume is %.0f bytes/s (the pause is counted)", r.At, r.Detail, average)
		}
		var left float64
		if len(parts) < 3 {
			t.Errorf("%.0f ms after Resume the page reads %q: a speed, no time left", r.At, r.Detail)
		} else if _, err := fmt.Sscanf(parts[2], "%g s left", &left); err == nil && left > 2*(size-received)/average+1 {
			t.Errorf("%.0f ms after Resume the page reads %q; at the average since Resume, %.1f s are left", r.At, r.Detail, (size-received)/average)
		}
	}
	if early == 0 {
		t.Fatalf("the page showed no speed in the 3 s after Resume: %+v", reports)
	}
}

// TestDemoPageShowsProcessingAsWork uploads to a backend that takes 3 s
// to answer: once every byte is in, the page says "Processing…" and the
// bar keeps moving (an animated, striped fill, aria-busy), rather than a
// plain full bar; once the answer is in, the animation stops.
func TestDemoPageShowsProcessingAsWork(t *testing.T) {
	ctx := newTab(t)
	s := startSite(t, "")
	path, want := writePayload(t, "slow-backend.bin", 256<<10)

	pickFiles(t, ctx, s.base+"/?target=/upload%3Fdelay%3D3s", path)
	waitFor(t, ctx, "the processing state", `document.querySelector(".upload")?.dataset.state === "processing"`)
	look, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`(() => {
		const li = document.querySelector(".upload"), fill = li.querySelector(".fill"), style = getComputedStyle(fill);
		return {
			state: li.dataset.state,
			detail: li.querySelector(".detail").textContent,
			animation: style.animationName,
			background: style.backgroundImage,
			busy: li.querySelector(".bar").getAttribute("aria-busy"),
			valuetext: li.querySelector(".bar").getAttribute("aria-valuetext"),
		};
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("while processing: %+v", look)
	screenshot(t, ctx, "demo-processing.png")
	if look["state"] == "processing" { // else it ended meanwhile: the backend's 3 s make that a failure below
		if !strings.HasPrefix(look["detail"], "Processing…") {
			t.Errorf("while processing the file reads %q; want it to start with %q", look["detail"], "Processing…")
		}
		if look["animation"] != "processing" || !strings.Contains(look["background"], "repeating-linear-gradient") {
			t.Errorf("while processing the bar's fill has animation %q and background %q; want the moving stripes (animation processing)", look["animation"], look["background"])
		}
		if look["busy"] != "true" || look["valuetext"] != "processing" {
			t.Errorf("while processing the bar has aria-busy %q, aria-valuetext %q; want true, processing", look["busy"], look["valuetext"])
		}
	} else {
		t.Errorf("the page left processing before it could be looked at: %+v", look)
	}

	waitSettled(t, ctx)
	after, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`(() => {
		const li = document.querySelector(".upload");
		return {state: li.dataset.state, sha256: li.querySelector(".sha256").textContent,
			animation: getComputedStyle(li.querySelector(".fill")).animationName, busy: li.querySelector(".bar").getAttribute("aria-busy")};
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	if after["state"] != "done" || after["sha256"] != want || after["animation"] != "none" || after["busy"] != "false" {
		t.Errorf("after the answer: %+v; want done, SHA-256 %s, no animation, aria-busy false", after, want)
	}
}

// TestDemoPageListsInterruptedUploadsAfterAReload starts a resumable
// upload, pauses it and leaves the page: opened again (without the
// resumable switch), the page lists the unfinished upload with the
// progress the proxy has; picking the same file again resumes that very
// upload (same ID, one list item), which the backend receives whole.
func TestDemoPageListsInterruptedUploadsAfterAReload(t *testing.T) {
	ctx := newTab(t)
	s := startResumableSite(t, "1MiB")
	const size = 8 << 20
	path, want := writePayload(t, "interrupted.bin", size)

	pickFiles(t, ctx, s.base+"/?resumable=on", path)
	waitFor(t, ctx, "the bar to reach 15 %", `Number(document.querySelector(".upload .bar")?.getAttribute("aria-valuenow")) >= 15`)
	id, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector(".upload").dataset.id`))
	if err != nil || id == "" {
		t.Fatalf("the page has no upload ID: %q %v", id, err)
	}
	// Pause, so that the proxy has stopped receiving before the reload
	// (Chromium may carry on sending a request body after the page is
	// gone, until the upload ends).
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(".upload .pause"))); err != nil {
		t.Fatalf("clicking Pause: %v", err)
	}
	waitUntil(t, func() bool { return s.status(t, id).Status == "paused" })
	received := s.status(t, id).Received
	if received <= 0 || received >= size {
		t.Fatalf("the proxy holds %d bytes of the interrupted upload; want some of %d", received, size)
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(s.base+"/"), chromedp.WaitReady(chromedp.ID("files"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the interrupted upload to be listed", `document.querySelector(".upload")?.dataset.state === "interrupted"`)
	listed, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`(() => {
		const li = document.querySelector(".upload");
		return {count: String(document.querySelectorAll(".upload").length), name: li.querySelector(".name").textContent,
			id: li.dataset.id, bar: li.querySelector(".bar").getAttribute("aria-valuenow"), detail: li.querySelector(".detail").textContent};
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("listed after the reload: %+v", listed)
	screenshot(t, ctx, "demo-interrupted-after-reload.png")
	if listed["count"] != "1" || listed["name"] != "interrupted.bin" || listed["id"] != id ||
		listed["bar"] != fmt.Sprint(100*received/size) || !strings.Contains(listed["detail"], "pick the file again to resume") {
		t.Errorf("after the reload the page lists %+v; want interrupted.bin, ID %s, at %d %% (%d of %d bytes), asking for the file", listed, id, 100*received/size, received, size)
	}

	if err := chromedp.Do(ctx, chromedp.SetUploadFiles(chromedp.ID("files"), []string{path})); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, ctx)
	uploads, err := chromedp.Run(ctx, chromedp.Evaluate[[]pageUpload](readUploads))
	if err != nil {
		t.Fatal(err)
	}
	if len(uploads) != 1 || uploads[0].State != "done" || uploads[0].SHA256 != want {
		t.Fatalf("after picking the file again the page shows %+v; want the one upload done with SHA-256 %s", uploads, want)
	}
	finalID, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector(".upload").dataset.id`))
	if err != nil || finalID != id {
		t.Errorf("the upload that finished is %q (%v); want the interrupted %q, resumed", finalID, err, id)
	}
	if st := s.status(t, id); st.Status != "complete" || st.Received != size || st.Resumable == nil || st.Resumable.Delivery != "delivered" {
		t.Errorf("the server's final status of %q: %+v", id, st)
	}
	left, err := chromedp.Run(ctx, chromedp.Evaluate[int](`Object.keys(localStorage).filter((k) => k.startsWith("upload-progress-tus::")).length`))
	if err != nil || left != 0 {
		t.Errorf("%d upload URLs (%v) are still stored after the upload finished; want none", left, err)
	}
}

// TestDemoPageHasOneSpeedFormat checks that web/format.js writes every
// speed with one decimal ("10.0 MiB/s" just below and at 10 MiB/s, never
// "10 MiB/s"), and that every speed the page shows during two uploads
// reads that way.
func TestDemoPageHasOneSpeedFormat(t *testing.T) {
	ctx := newTab(t)
	s := startSite(t, "rate_limit 3MiB")
	if err := chromedp.Do(ctx, chromedp.Navigate(s.base+"/"), chromedp.WaitReady(chromedp.ID("files"))); err != nil {
		t.Fatal(err)
	}
	formats, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`import("/format.js").then((f) => [10485000, 10485760, 1048575.9, 3 << 20, 700 << 10].map(f.formatSpeed))`,
		chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0 MiB/s", "10.0 MiB/s", "1.0 MiB/s", "3.0 MiB/s", "700.0 KiB/s"}; fmt.Sprint(formats) != fmt.Sprint(want) {
		t.Errorf("formatSpeed gives %q; want %q", formats, want)
	}

	one, _ := writePayload(t, "one.bin", 6<<20)
	two, _ := writePayload(t, "two.bin", 3<<20)
	pickFilesRecording(t, ctx, s.base+"/", one, two)
	waitSettled(t, ctx)
	snaps, err := chromedp.Run(ctx, chromedp.Evaluate[[]textSnapshot](`window.seenTexts`))
	if err != nil {
		t.Fatal(err)
	}
	oneFormat := regexp.MustCompile(`^[0-9]+\.[0-9] (bytes|KiB|MiB|GiB|TiB)/s$`)
	seen := 0
	for _, snap := range snaps {
		lines := []string{snap.Overall}
		for _, f := range snap.Files {
			lines = append(lines, f.Detail)
		}
		for _, line := range lines {
			for _, speed := range speedText.FindAllString(line, -1) {
				seen++
				if !oneFormat.MatchString(speed) {
					t.Errorf("the page shows the speed %q in %q; want one decimal, as %q", speed, line, "3.0 MiB/s")
				}
			}
		}
	}
	if seen == 0 {
		t.Fatalf("the page showed no speed: %+v", snaps)
	}
}
