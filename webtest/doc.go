// Package webtest tests the browser client (web/upload-progress.js) and
// the demo page (web/index.html) in a real headless Chromium, driven by
// chromedp, against a real Caddy running in the test process with
// upload_progress, the demo backend and a file_server for web/.
//
// The tests need Debian's chromium at /usr/bin/chromium; they skip
// without it, unless the environment variable CI is set.
package webtest
