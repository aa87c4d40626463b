package webtest

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
)

// followEvents is a script that opens an EventSource on a URL and keeps,
// in window.seen[url], the name of every event it gets and, on an error,
// the readyState then ("error:0" is reconnecting, "error:2" closed for
// good).
const followEvents = `(url) => {
	window.seen = window.seen || {};
	const seen = window.seen[url] = [];
	const es = new EventSource(url);
	for (const name of ["pending", "complete", "error", "aborted"]) {
		es.addEventListener(name, (e) => { if (e.data) seen.push(name); });
	}
	es.onmessage = () => seen.push("progress");
	es.onerror = () => seen.push("error:" + es.readyState);
}`

// An EventSource on an upload (or a group) that has already ended gets
// the final event once; its reconnect gets 204, and it stops for good.
// (Before, it got the final event again every second.)
func TestEventSourceStopsReconnectingAfterTheEnd(t *testing.T) {
	s := startSite(t, "")
	req, _ := http.NewRequest(http.MethodPost, s.base+"/upload", strings.NewReader("data"))
	req.Header.Set("X-Upload-ID", "ended")
	req.Header.Set("X-Upload-Group", "ended-group")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitUntil(t, func() bool { return s.status(t, "ended").Status == "complete" })

	ctx := newTab(t)
	urls := []string{caddyprogress.DefaultEventsPath + "ended", caddyprogress.DefaultEventsPath + "?group=ended-group"}
	if err := chromedp.Do(ctx, chromedp.Navigate(s.base+"/")); err != nil {
		t.Fatal(err)
	}
	for _, url := range urls {
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("("+followEvents+")("+quoteJS(url)+"), true")); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(4 * time.Second) // four reconnect delays (retry: 1000)
	seen, err := chromedp.Run(ctx, chromedp.Evaluate[map[string][]string]("window.seen"))
	if err != nil {
		t.Fatal(err)
	}
	for _, url := range urls {
		// the stream ends (error, reconnecting: 0); the reconnect gets
		// 204 (error, closed: 2)
		if want := []string{"complete", "error:0", "error:2"}; !slices.Equal(seen[url], want) {
			t.Errorf("EventSource on %s saw %v in 4 s, want %v", url, seen[url], want)
		}
	}
}

// quoteJS quotes s as a JavaScript string literal (s has no quote or
// backslash).
func quoteJS(s string) string { return `"` + s + `"` }
