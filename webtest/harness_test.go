package webtest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
	_ "github.com/caddy-upload-progress/caddy-upload-progress/demobackend"
)

// The tests run real Caddy in this process (caddy.Load is process-wide),
// one config at a time: they must not run in parallel.

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "webtest")
	if err != nil {
		panic(err)
	}
	// keep Caddy's storage out of $HOME
	os.Setenv("XDG_DATA_HOME", dir)
	os.Setenv("XDG_CONFIG_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// site is a running Caddy that serves the web/ folder, tracks uploads
// with upload_progress and proxies them to the demo backend, as
// Caddyfile.example does.
type site struct {
	base string // e.g. http://127.0.0.1:1234
}

// globalOptions are the Caddyfile global options of every test config:
// no admin endpoint (its port is fixed), quiet logs.
const globalOptions = `{
	admin off
	persist_config off
	skip_install_trust
	log {
		level ERROR
	}
}
`

// webDir is the absolute path of the web/ folder.
func webDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("../web")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// loadCaddyfile runs Caddy with the Caddyfile until the test ends.
func loadCaddyfile(t testing.TB, caddyfile string) {
	t.Helper()
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatalf("adapting Caddyfile: %v\n%s", err, caddyfile)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading config: %v\n%s", err, cfg)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
}

// startSite runs Caddy on fresh ports until the test ends, set up as
// Caddyfile.example is. options go into the upload_progress block.
func startSite(t testing.TB, options string) *site {
	t.Helper()
	port, backendPort := freePort(t), freePort(t)
	loadCaddyfile(t, globalOptions+fmt.Sprintf(`
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
`, port, backendPort, options, webDir(t)))
	return &site{base: fmt.Sprintf("http://127.0.0.1:%d", port)}
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
