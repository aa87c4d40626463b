package webtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is where Debian's chromium package puts the browser.
const chromiumPath = "/usr/bin/chromium"

// newTab starts a headless Chromium for this test and returns the
// context of its tab. The browser stops when the test ends; if the test
// failed, what the page wrote to its console is logged.
func newTab(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing, and in CI the browser tests must run: apt-get install -y chromium", chromiumPath)
		}
		t.Skipf("skipping the browser test: %s is missing (install Debian's chromium package; with CI set, this is a failure)", chromiumPath)
	}

	// The flags of the machine notes: no sandbox (tests run as root), no
	// GPU, and no background connections to the outside world.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(900, 1000),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	tabCtx, cancelTab := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(tabCtx, 3*time.Minute)
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab()
		cancelAlloc() // waits for the browser to exit
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	keepConsole(t, ctx)
	return ctx
}

// keepConsole collects the page's console messages and logs them if the
// test fails.
func keepConsole(t *testing.T, ctx context.Context) {
	var (
		mu       sync.Mutex
		messages []string
	)
	go func() { // ends with ctx, when the browser stops
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			mu.Lock()
			messages = append(messages, m.String())
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if t.Failed() && len(messages) > 0 {
			t.Logf("the page's console:\n%s", strings.Join(messages, "\n"))
		}
	})
}

// screenshot saves a PNG of the whole page in the test's artifact
// folder (kept with go test -artifacts) and logs its path.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("taking a screenshot: %v", err)
	}
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
