// Package testcaddy runs real Caddy inside a test process, for the tests
// of caddyprogress and webtest. caddy.Load is process-wide, so tests that
// use it must not run in parallel.
package testcaddy

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testkit"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile" // the Caddyfile adapter
	"github.com/caddyserver/certmagic"
)

// FreePort returns a loopback TCP port that was free a moment ago.
var FreePort = testkit.FreePort

// GlobalOptions are the Caddyfile global options of every test config:
// no admin endpoint (its port is fixed), nothing persisted or installed,
// certificates from Caddy's internal CA, quiet logs.
const GlobalOptions = `{
	admin off
	persist_config off
	skip_install_trust
	local_certs
	log {
		level ERROR
	}
}
`

// Main runs the tests with Caddy's storage in a temporary folder, out of
// $HOME, and returns their exit code: os.Exit(testcaddy.Main(m)).
func Main(m *testing.M) int {
	dir, err := os.MkdirTemp("", "testcaddy")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	os.Setenv("XDG_DATA_HOME", dir)
	os.Setenv("XDG_CONFIG_HOME", dir)
	// Caddy computed its default storage's folder when it was
	// initialized, before the variables above: point it here too.
	caddy.DefaultStorage = &certmagic.FileStorage{Path: caddy.AppDataDir()}
	return m.Run()
}

// Load (re)loads Caddy with the Caddyfile.
func Load(t testing.TB, caddyfile string) {
	t.Helper()
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatalf("adapting Caddyfile: %v\n%s", err, caddyfile)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading config: %v\n%s", err, cfg)
	}
	waitForOldSockets(t, caddyfile)
	waitForCertificates(t, caddyfile)
}

// siteAddress matches the site addresses of the tests' Caddyfiles.
var siteAddress = regexp.MustCompile(`https?://127\.0\.0\.1:(\d+)`)

// waitForOldSockets waits until each site port of caddyfile has one
// listening TCP socket. On Linux, Caddy binds a reloaded config's
// listeners with SO_REUSEPORT beside the old config's, and closes the
// old ones only as the old servers shut down, which caddy.Load does
// not wait for: until then the kernel hands some new connections to
// the old socket, and those still in its queue when it closes are
// reset. A test that connects right after a reload would fail on that
// (about one reload in 300 here), so Load returns once the old sockets
// are gone. Where /proc/net/tcp is missing, it does not wait.
func waitForOldSockets(t testing.TB, caddyfile string) {
	t.Helper()
	for _, m := range siteAddress.FindAllStringSubmatch(caddyfile, -1) {
		port, _ := strconv.ParseUint(m[1], 10, 16)
		deadline := time.Now().Add(10 * time.Second)
		for {
			n, err := listeningSockets(uint16(port))
			if err != nil || n <= 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("port %d still has %d listening sockets 10s after the reload", port, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// listeningSockets counts the IPv4 TCP sockets in the LISTEN state (0A)
// on port, from /proc/net/tcp, whose lines read
// "sl local_address rem_address st ...", local_address as hex IP:port.
func listeningSockets(port uint16) (int, error) {
	table, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return 0, err
	}
	local := fmt.Sprintf(":%04X", port)
	n := 0
	for _, line := range strings.Split(string(table), "\n")[1:] {
		fields := strings.Fields(line)
		if len(fields) > 3 && strings.HasSuffix(fields[1], local) && fields[3] == "0A" {
			n++
		}
	}
	return n, nil
}

// httpsSite matches the HTTPS site addresses of the tests' Caddyfiles.
var httpsSite = regexp.MustCompile(`https://(127\.0\.0\.1:\d+)`)

// waitForCertificates waits until each HTTPS site of caddyfile completes
// a TLS handshake: Caddy's internal CA issues a new site's certificate
// in the background, and a handshake before it is there fails with
// "tls: internal error".
func waitForCertificates(t testing.TB, caddyfile string) {
	t.Helper()
	for _, m := range httpsSite.FindAllStringSubmatch(caddyfile, -1) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", m[1],
				&tls.Config{InsecureSkipVerify: true}) // the internal CA, made for this test
			if err == nil {
				conn.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no TLS handshake with %s within 10s: %v", m[1], err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Run loads Caddy with the Caddyfile and stops it when the test ends.
func Run(t testing.TB, caddyfile string) {
	t.Helper()
	Load(t, caddyfile)
	t.Cleanup(func() { _ = caddy.Stop() })
}
