package webtest

import (
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDemoPageResumableModePausesAndResumes uploads with the page's
// resumable switch on (web/resumable.js, tus): Pause stops the upload
// with its bytes kept on the proxy, Resume goes on from there, and the
// backend's hash of the whole file arrives.
func TestDemoPageResumableModePausesAndResumes(t *testing.T) {
	ctx := newTab(t)
	s := startSite(t, fmt.Sprintf("rate_limit 2MiB\n\t\tresumable /files/ {\n\t\t\tdir %q\n\t\t\tdeliver_to /upload\n\t\t}", t.TempDir()))
	path, want := writePayload(t, "resumable.bin", 8<<20)

	pickFiles(t, ctx, s.base+"/?resumable=on", path)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](
		`Number(document.querySelector(".upload .bar")?.getAttribute("aria-valuenow")) >= 15`,
		chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("waiting for the bar to reach 15 %%: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(".upload .pause"))); err != nil {
		t.Fatalf("clicking Pause: %v", err)
	}
	id, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector(".upload").dataset.id`))
	if err != nil || id == "" {
		t.Fatalf("the page has no upload ID: %q %v", id, err)
	}
	waitUntil(t, func() bool { return s.status(t, id).Status == "paused" })
	paused := s.status(t, id)
	if paused.Received <= 0 || paused.Received >= 8<<20 || paused.Resumable == nil || paused.Resumable.Delivery != "receiving" {
		t.Fatalf("status while paused: %+v", paused)
	}
	time.Sleep(300 * time.Millisecond)
	if st := s.status(t, id); st.Received != paused.Received {
		t.Fatalf("received went from %d to %d while paused", paused.Received, st.Received)
	}

	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(".upload .pause"))); err != nil {
		t.Fatalf("clicking Resume: %v", err)
	}
	waitSettled(t, ctx)
	uploads, err := chromedp.Run(ctx, chromedp.Evaluate[[]pageUpload](readUploads))
	if err != nil {
		t.Fatal(err)
	}
	if len(uploads) != 1 || uploads[0].State != "done" || uploads[0].SHA256 != want {
		t.Fatalf("the page shows %+v; want one done upload with the backend's sha256 %s", uploads, want)
	}
	st := s.status(t, id)
	if st.Status != "complete" || st.Received != 8<<20 || st.Resumable.Delivery != "delivered" {
		t.Fatalf("final status: %+v %+v", st, st.Resumable)
	}
}

// TestDemoPageResumableModeCancels clicks Cancel in the resumable mode:
// the page says so, and the proxy terminates the upload (aborted, its
// bytes deleted).
func TestDemoPageResumableModeCancels(t *testing.T) {
	ctx := newTab(t)
	s := startSite(t, fmt.Sprintf("rate_limit 2MiB\n\t\tresumable /files/ {\n\t\t\tdir %q\n\t\t\tdeliver_to /upload\n\t\t}", t.TempDir()))
	path, _ := writePayload(t, "cancelled.bin", 8<<20)

	pickFiles(t, ctx, s.base+"/?resumable=on", path)
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
	if st := s.status(t, id); st.Error != "terminated by the client" {
		t.Errorf("status after Cancel: %+v", st)
	}
}
