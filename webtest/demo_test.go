package webtest

import (
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

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

// TestDemoPageUploads20MiBWithMovingBarAndBackendHash picks a 20 MiB file
// on the demo page, with upload_progress's rate_limit at 5 MiB/s, and checks that both
// bars pass through values between 0 and 100 on their way to 100, that
// the page shows the SHA-256 the backend computed, and that the server
// tracked the upload under the ID the page shows.
func TestDemoPageUploads20MiBWithMovingBarAndBackendHash(t *testing.T) {
	ctx := newTab(t)
	s := startSite(t, "rate_limit 5MiB")
	const size = 20 << 20
	path, wantSHA := writePayload(t, "twenty-mib.bin", size)

	start := time.Now()
	err := chromedp.Do(ctx,
		chromedp.Navigate(s.base+"/"),
		chromedp.WaitReady(chromedp.ID("files")),
		chromedp.Evaluate[chromedp.Void](recordBars),
		chromedp.SetUploadFiles(chromedp.ID("files"), []string{path}),
	)
	if err != nil {
		t.Fatalf("opening the page and picking the file: %v", err)
	}
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](
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
	for name, values := range map[string][]int{"overall": bars.Overall, "file": bars.File} {
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
