package webtest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// What the demo page tests read off the page, and how.

// recordBars is a script that records every value the overall bar and
// the first file's bar take (their aria-valuenow), in window.seenBars.
const recordBars = `
window.seenBars = {overall: [], file: []};
new MutationObserver(() => {
	const note = (list, el) => {
		if (!el) return;
		const v = Number(el.getAttribute("aria-valuenow"));
		if (list.length === 0 || list[list.length - 1] !== v) list.push(v);
	};
	note(window.seenBars.overall, document.getElementById("overall-bar"));
	note(window.seenBars.file, document.querySelector(".upload .bar"));
}).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ["aria-valuenow"]});
`

// seenBars is what recordBars recorded.
type seenBars struct {
	Overall []int `json:"overall"`
	File    []int `json:"file"`
}

// pageUpload is one file's list item on the demo page, as the tests read it.
type pageUpload struct {
	Name   string `json:"name"`
	State  string `json:"state"`
	SHA256 string `json:"sha256"`
	Error  string `json:"error"`
}

// readUploads is a script that reads every file's list item.
const readUploads = `Array.from(document.querySelectorAll(".upload"), (li) => ({
	name: li.querySelector(".name").textContent,
	state: li.dataset.state,
	sha256: li.querySelector(".sha256").textContent,
	error: li.querySelector(".error").hidden ? "" : li.querySelector(".error").textContent,
}))`

// allSettled is a script that is true once no file is waiting or uploading.
const allSettled = `document.querySelectorAll(".upload").length > 0 &&
	Array.from(document.querySelectorAll(".upload")).every((li) => li.dataset.state === "done" || li.dataset.state === "failed")`

// pickFiles opens the demo page at url, starts recording its bars, and
// picks the files, which starts their upload.
func pickFiles(t *testing.T, ctx context.Context, url string, paths ...string) {
	t.Helper()
	err := chromedp.Do(ctx,
		chromedp.Navigate(url),
		chromedp.WaitReady(chromedp.ID("files")),
		chromedp.Evaluate[chromedp.Void](recordBars),
		chromedp.SetUploadFiles(chromedp.ID("files"), paths),
	)
	if err != nil {
		t.Fatalf("opening the page and picking %v: %v", paths, err)
	}
}

// waitSettled waits until every upload on the page is done or failed.
func waitSettled(t *testing.T, ctx context.Context) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](allSettled,
		chromedp.WithPollingInterval(100*time.Millisecond),
		chromedp.WithPollingTimeout(60*time.Second)))
	if err != nil {
		t.Fatalf("waiting for the uploads to end: %v", err)
	}
}

// checkBar checks the values a bar took: never backwards, at least three
// strictly between 0 and 100, and 100 at the end.
func checkBar(t *testing.T, name string, values []int) {
	t.Helper()
	if !slices.IsSorted(values) {
		t.Errorf("the %s bar went backwards: %v", name, values)
	}
	between := 0
	for _, v := range values {
		if v > 0 && v < 100 {
			between++
		}
	}
	if between < 3 {
		t.Errorf("the %s bar took %d values between 0 and 100 (%v); want at least 3", name, between, values)
	}
	if len(values) == 0 || values[len(values)-1] != 100 {
		t.Errorf("the %s bar ended at %v; want 100", name, values)
	}
}
