package webtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/chromedp/chromedp"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// corsPage is the page of the second origin: it loads tus-js-client's
// browser build, which the same origin serves.
const corsPage = `<!doctype html>
<meta charset="utf-8">
<title>tus from another origin</title>
<script src="/tus.min.js"></script>
`

// corsUploadScript uploads a generated body of %[2]d bytes (byte i is
// i %% 251) with tus-js-client to the endpoint %[1]q in chunks of %[3]d
// bytes, with credentials (XHR withCredentials) if %[4]t: it stops after
// the first chunk, then resumes from the upload's URL (a HEAD, then the
// remaining PATCHes). It also sends a PATCH of an
// unknown upload with fetch, to see whether the proxy's own refusal is
// readable. It returns what corsRun decodes.
const corsUploadScript = `(async () => {
	const endpoint = %[1]q;
	const body = new Uint8Array(%[2]d);
	for (let i = 0; i < body.length; i++) body[i] = i %% 251;
	const file = new Blob([body]);
	const methods = [];
	const common = {
		endpoint,
		chunkSize: %[3]d,
		retryDelays: null,
		storeFingerprintForResuming: false,
		metadata: { filename: "cors.bin", filetype: "application/octet-stream" },
		onBeforeRequest(req) {
			methods.push(req.getMethod());
			req.getUnderlyingObject().withCredentials = %[4]t;
		},
	};
	const out = { methods };
	try {
		out.url = await new Promise((resolve, reject) => {
			const up = new tus.Upload(file, Object.assign({}, common, {
				onChunkComplete() { up.abort().then(() => resolve(up.url), reject); },
				onError: reject,
				onSuccess() { reject(new Error("the upload finished without stopping")); },
			}));
			up.start();
		});
		out.answer = await new Promise((resolve, reject) => {
			const up = new tus.Upload(file, Object.assign({}, common, {
				uploadUrl: out.url,
				onError: reject,
				onSuccess({ lastResponse }) { resolve({ status: lastResponse.getStatus(), body: lastResponse.getBody() }); },
			}));
			up.start();
		});
	} catch (e) {
		out.error = String(e);
	}
	try {
		const r = await fetch(endpoint + "0123456789abcdef0123456789abcdef", {
			method: "PATCH",
			headers: { "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream" },
			body: "x",
			credentials: %[4]t ? "include" : "same-origin",
		});
		out.refusal = { status: r.status, body: await r.text() };
	} catch (e) {
		out.refusalError = String(e);
	}
	return out;
})()`

// corsRun is what corsUploadScript returns.
type corsRun struct {
	Methods []string `json:"methods"`
	URL     string   `json:"url"`
	Answer  *struct {
		Status int    `json:"status"`
		Body   string `json:"body"`
	} `json:"answer"`
	Error   string `json:"error"`
	Refusal *struct {
		Status int    `json:"status"`
		Body   string `json:"body"`
	} `json:"refusal"`
	RefusalError string `json:"refusalError"`
}

// TestTusFromAnotherOriginNeedsCORSOrigins uploads with tus-js-client's
// browser build from a page of a second origin (another port of
// 127.0.0.1) to the proxy's tus endpoint in real Chromium. Without
// cors_origins, and with only another origin allowed, the browser
// refuses the requests (CORS). With the page's origin in cors_origins
// (with credentials) or *, the upload goes through in several PATCHes,
// resumes with a HEAD, and the backend gets the same bytes; the proxy's
// own 404 for an unknown upload is readable by the page.
func TestTusFromAnotherOriginNeedsCORSOrigins(t *testing.T) {
	ctx := newTab(t)
	pageDir := t.TempDir()
	tus, err := os.ReadFile("../caddyprogress/resumable/testdata/node/node_modules/tus-js-client/dist/tus.min.js")
	if err != nil {
		t.Fatalf("tus-js-client's browser build (npm ci in caddyprogress/resumable/testdata/node): %v", err)
	}
	if err := os.WriteFile(filepath.Join(pageDir, "tus.min.js"), tus, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pageDir, "index.html"), []byte(corsPage), 0o644); err != nil {
		t.Fatal(err)
	}
	proxyPort, backendPort, pagePort := testcaddy.FreePort(t), testcaddy.FreePort(t), testcaddy.FreePort(t)
	pageOrigin := fmt.Sprintf("http://127.0.0.1:%d", pagePort)
	endpoint := fmt.Sprintf("http://127.0.0.1:%d/files/", proxyPort)
	uploads := t.TempDir()
	config := func(cors string) string {
		return testcaddy.GlobalOptions + fmt.Sprintf(`
http://127.0.0.1:%[1]d {
	upload_progress {
		resumable /files/ {
			dir %[4]q
			deliver_to /upload
			%[5]s
		}
	}
	@upload path /upload
	reverse_proxy @upload 127.0.0.1:%[2]d
}

http://127.0.0.1:%[2]d {
	upload_demo_backend
}

http://127.0.0.1:%[3]d {
	root * %[6]q
	file_server
}
`, proxyPort, backendPort, pagePort, uploads, cors, pageDir)
	}
	const size, chunk = 1<<20 + 12345, 256 << 10
	run := func(cors string, credentials bool) corsRun {
		t.Helper()
		testcaddy.Load(t, config(cors))
		if err := chromedp.Do(ctx, chromedp.Navigate(pageOrigin+"/"), chromedp.WaitReady("body")); err != nil {
			t.Fatalf("opening the page: %v", err)
		}
		got, err := chromedp.Run(ctx, chromedp.Evaluate[corsRun](
			fmt.Sprintf(corsUploadScript, endpoint, size, chunk, credentials), chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("running tus-js-client in the page: %v", err)
		}
		return got
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	// the refused cases first: a preflight the browser cached would not
	// make them pass, but it is cleaner not to have one
	for _, refused := range []struct{ name, cors string }{
		{"without cors_origins", ""},
		{"with another origin allowed", fmt.Sprintf("cors_origins http://127.0.0.1:%d https://app.example.com", testcaddy.FreePort(t))},
	} {
		got := run(refused.cors, false)
		if got.Error == "" || got.URL != "" || got.Answer != nil {
			t.Errorf("%s: the upload from %s did not fail: %+v", refused.name, pageOrigin, got)
		}
		if got.Refusal != nil || got.RefusalError == "" {
			t.Errorf("%s: a PATCH from %s was answered readably: %+v", refused.name, pageOrigin, got)
		}
	}

	for _, allowed := range []struct {
		cors        string
		credentials bool // an exact origin may send credentials, * may not
	}{
		{"cors_origins " + pageOrigin, true},
		{"cors_origins *", false},
	} {
		got := run(allowed.cors, allowed.credentials)
		if got.Error != "" || got.Answer == nil {
			t.Fatalf("%s: the upload from %s failed: %+v", allowed.cors, pageOrigin, got)
		}
		if got.Answer.Status != 200 || !strings.Contains(got.Answer.Body, `"sha256":"`+generatedSHA256(size)+`"`) ||
			!strings.Contains(got.Answer.Body, fmt.Sprintf(`"bytes":%d`, size)) {
			t.Errorf("%s: the backend's answer: %+v; want 200 with %d bytes of sha256 %s", allowed.cors, got.Answer, size, generatedSHA256(size))
		}
		counts := map[string]int{}
		for _, m := range got.Methods {
			counts[m]++
		}
		if counts["POST"] != 1 || counts["HEAD"] != 1 || counts["PATCH"] != (size+chunk-1)/chunk {
			t.Errorf("%s: requests %v; want one POST, one HEAD (the resume) and %d PATCHes", allowed.cors, got.Methods, (size+chunk-1)/chunk)
		}
		if got.Refusal == nil || got.Refusal.Status != 404 || !strings.Contains(got.Refusal.Body, `"error"`) {
			t.Errorf("%s: the PATCH of an unknown upload: %+v %s; want a readable 404 with a JSON error", allowed.cors, got.Refusal, got.RefusalError)
		}
	}
}
