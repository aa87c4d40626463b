package webtest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
	_ "github.com/caddy-upload-progress/caddy-upload-progress/demobackend"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// The tests run real Caddy in this process (internal/testcaddy), one
// config at a time: they must not run in parallel.

func TestMain(m *testing.M) { os.Exit(testcaddy.Main(m)) }

// site is a running Caddy that serves the web/ folder, tracks uploads
// with upload_progress and proxies them to the demo backend, as
// Caddyfile.example does.
type site struct {
	base      string // e.g. http://127.0.0.1:1234
	caddyfile string // the config it runs, to reload it
}

// webDir is the absolute path of the web/ folder.
func webDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("../web")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// startSite runs Caddy on fresh ports until the test ends, set up as
// Caddyfile.example is. options go into the upload_progress block.
func startSite(t testing.TB, options string) *site {
	t.Helper()
	port, backendPort := testcaddy.FreePort(t), testcaddy.FreePort(t)
	caddyfile := testcaddy.GlobalOptions + fmt.Sprintf(`
http://127.0.0.1:%[1]d {
	upload_progress {
%[3]s
	}
	@upload path /upload /upload/*
	reverse_proxy @upload 127.0.0.1:%[2]d

	root * %[4]q
	file_server
}

http://127.0.0.1:%[2]d {
	upload_demo_backend
}
`, port, backendPort, options, webDir(t))
	testcaddy.Run(t, caddyfile)
	return &site{base: fmt.Sprintf("http://127.0.0.1:%d", port), caddyfile: caddyfile}
}

// status reads an upload's status from the status route.
func (s *site) status(t testing.TB, id string) caddyprogress.Status {
	t.Helper()
	resp, err := http.Get(s.base + caddyprogress.DefaultStatusPath + id)
	if err != nil {
		t.Fatalf("reading status: %v", err)
	}
	defer resp.Body.Close()
	var st caddyprogress.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("decoding status: %v", err)
	}
	return st
}

// waitUntil polls cond every 20ms until it holds, or fails after 10s.
func waitUntil(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("waited 10s in vain")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writePayload writes size bytes of deterministic pseudo-random data to
// a file called name in a temporary folder, and returns its path and
// SHA-256 in hex.
func writePayload(t testing.TB, name string, size int) (path, sum string) {
	t.Helper()
	b := make([]byte, size)
	var x uint64 = 0x9E3779B97F4A7C15
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	path = filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return path, hex.EncodeToString(h[:])
}
