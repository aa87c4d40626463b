package caddyprogress

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// Reads are capped at the shared quantum, so the longest wait between
// two reads of an upload is about quantum × uploads / rate_limit_total,
// whatever the burst and the reader's buffer. Here 3 uploads share
// 256 KiB/s with a 1 MiB burst, read with 1 MiB buffers: the bound is
// 32 KiB × 3 / 256 KiB/s = 375ms (read by a whole burst, each read
// would wait about 12 s, past any read_idle_timeout under 15 s).
func TestSharedWaitBetweenReadsIsBoundedByTheQuantum(t *testing.T) {
	const uploads, bytesPerSecond, burst = 3, 256 << 10, 1 << 20
	bound := time.Duration(float64(minBurst*uploads) / bytesPerSecond * float64(time.Second))
	total := newLimiter(bytesPerSecond, burst)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()

	longest := make([]time.Duration, uploads)
	reads := make([]int, uploads)
	var wg sync.WaitGroup
	for i := range uploads {
		body := &countingBody{
			ReadCloser: io.NopCloser(endless{}),
			upload:     newUpload(fmt.Sprint("bound-", i), -1, time.Now(), progress.StateUploading),
			throttle:   newThrottle(nil, total),
			ctx:        ctx,
		}
		wg.Go(func() {
			buf := make([]byte, 1<<20)
			for {
				start := time.Now()
				n, err := body.Read(buf)
				longest[i] = max(longest[i], time.Since(start))
				if err != nil {
					return
				}
				reads[i]++
				if n > minBurst {
					t.Errorf("a read returned %d bytes, more than the quantum %d", n, minBurst)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("bound %s; longest read of each upload %v; reads %v", bound, longest, reads)
	for i := range uploads {
		if reads[i] < 3 || longest[i] > 3*bound {
			t.Errorf("upload %d: %d reads in 3s, the longest took %s; want several, none much over the bound %s",
				i, reads[i], longest[i], bound)
		}
	}
}

// sharedLimiter returns the shared bucket of the named tracker.
func sharedLimiter(t *testing.T, name string) *rate.Limiter {
	t.Helper()
	var l *rate.Limiter
	trackers.Range(func(key, value any) bool {
		if key == name {
			tr := value.(*tracker)
			tr.mu.RLock()
			l = tr.total
			tr.mu.RUnlock()
		}
		return l == nil
	})
	if l == nil {
		t.Fatalf("tracker %q has no shared bucket", name)
	}
	return l
}

// A reload that fails (here a later module's config is refused) leaves
// the running config's shared rate as it was; a reload that succeeds
// changes it once the new config runs.
func TestFailedReloadKeepsTheSharedRate(t *testing.T) {
	up := newUpstream(t)
	site := fmt.Sprintf("http://127.0.0.1:%d", testcaddy.FreePort(t))
	config := func(rateLimitTotal string, failing bool) string {
		extra := ""
		if failing { // without a matcher, it is sorted and provisioned after the handler above, and refused
			extra = "\tupload_progress {\n\t\ttracker other\n\t\tstatus_access token\n\t\ttoken_secret {env.UPLOAD_PROGRESS_UNSET_SECRET}\n\t}\n"
		}
		return testcaddy.GlobalOptions + fmt.Sprintf("%s {\n\tupload_progress /up* {\n\t\ttracker reloadrate\n\t\trate_limit_total %s\n\t}\n%s\treverse_proxy %s\n}\n",
			site, rateLimitTotal, extra, up.host)
	}
	testcaddy.Run(t, config("1MiB", false))
	if got := sharedLimiter(t, "reloadrate").Limit(); got != 1<<20 {
		t.Fatalf("shared rate %v, want 1 MiB/s", got)
	}

	err := loadErr(t, config("4MiB", true))
	if err == nil || !strings.Contains(err.Error(), "token_secret") {
		t.Fatalf("the failing config loaded: %v", err)
	}
	if got := sharedLimiter(t, "reloadrate").Limit(); got != 1<<20 {
		t.Fatalf("after a failed reload the shared rate is %v, want still 1 MiB/s", got)
	}
	p := &proxy{base: site, client: &http.Client{}}
	if resp, _ := p.upload(t, http.MethodPost, "/upload", strings.NewReader("data"), 4, nil); resp.StatusCode != 200 || resp.Header.Get("X-Upload-ID") == "" {
		t.Fatalf("the old config stopped serving: %d", resp.StatusCode)
	}

	testcaddy.Load(t, config("4MiB", false))
	if got := sharedLimiter(t, "reloadrate").Limit(); got != 4<<20 {
		t.Fatalf("after a good reload the shared rate is %v, want 4 MiB/s", got)
	}
}
