package progresscmd_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testkit"
)

// These tests run the real caddy binary (caddy-build, built once by
// TestMain), its upload-progress commands in a real terminal (tmux), and
// Caddy itself as a separate process with a config of the test's.

// caddyBin is the binary TestMain built.
var caddyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "progresscmd")
	if err != nil {
		panic(err)
	}
	caddyBin = filepath.Join(dir, "caddy")
	build := exec.Command("go", "build", "-o", caddyBin, "../../caddy-build")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building caddy-build: %v\n", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needTmux skips the test when tmux is missing, unless CI is set: then
// it fails.
func needTmux(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("tmux is not installed (apt-get install tmux): %v", err)
		}
		t.Skip("tmux is not installed: these tests run the commands in a real terminal (apt-get install tmux)")
	}
}

// proxy is a Caddy process with a test's config.
type proxy struct {
	admin string // the admin address, 127.0.0.1:port
	site  string // http://127.0.0.1:port
	dir   string // its XDG folders and Caddyfile
	cmd   *exec.Cmd
	log   *bytes.Buffer
	file  string
}

// startProxy runs caddy with global options that open the admin API on a
// free port and a site on another, whose body is site (the site's
// directives, with {dir} replaced by a folder of the test).
func startProxy(t *testing.T, site string) *proxy {
	t.Helper()
	return startProxyWithAdmin(t, fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)), site)
}

// startProxyWithAdmin is startProxy with the admin endpoint at admin
// (e.g. unix//path/to/socket).
func startProxyWithAdmin(t *testing.T, admin, site string) *proxy {
	t.Helper()
	p := &proxy{
		admin: admin,
		site:  fmt.Sprintf("http://127.0.0.1:%d", testkit.FreePort(t)),
		dir:   t.TempDir(),
	}
	caddyfile := fmt.Sprintf("{\n\tadmin %s\n\tpersist_config off\n\tlog {\n\t\tlevel ERROR\n\t}\n}\n\n%s {\n%s}\n",
		p.admin, p.site, strings.ReplaceAll(site, "{dir}", p.dir))
	p.file = filepath.Join(p.dir, "Caddyfile")
	if err := os.WriteFile(p.file, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	p.start(t)
	t.Cleanup(func() { p.stop(t) })
	return p
}

func (p *proxy) start(t *testing.T) {
	t.Helper()
	p.log = new(bytes.Buffer)
	p.cmd = exec.Command(caddyBin, "run", "--config", p.file, "--adapter", "caddyfile")
	p.cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+p.dir, "XDG_CONFIG_HOME="+p.dir)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := p.adminClient().Get("http://" + p.adminHost() + "/upload_progress/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not answer on its admin address within 30s: %v\n%s", err, p.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// adminClient reaches the admin endpoint, over TCP or a unix socket.
func (p *proxy) adminClient() *http.Client {
	socket, ok := strings.CutPrefix(p.admin, "unix/")
	if !ok {
		return http.DefaultClient
	}
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
}

func (p *proxy) adminHost() string {
	if strings.HasPrefix(p.admin, "unix/") {
		return "127.0.0.1"
	}
	return p.admin
}

// stop ends caddy (SIGTERM, then SIGKILL after 10 s).
func (p *proxy) stop(t *testing.T) {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
		t.Errorf("caddy did not stop within 10s of SIGTERM")
	}
	p.cmd = nil
}

// listing is the admin API's listing, as the tests read it.
type listing struct {
	Trackers []struct {
		Name    string `json:"name"`
		Uploads []struct {
			ID       string `json:"id"`
			Status   string `json:"status"`
			Received int64  `json:"received"`
		} `json:"uploads"`
	} `json:"trackers"`
}

func (p *proxy) listing(t *testing.T) listing {
	t.Helper()
	resp, err := p.adminClient().Get("http://" + p.adminHost() + "/upload_progress/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var l listing
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		t.Fatal(err)
	}
	return l
}

// waitForListing waits until the admin listing satisfies ok.
func (p *proxy) waitForListing(t *testing.T, what string, ok func(listing) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		l := p.listing(t)
		if ok(l) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 60s for %s; the listing is %+v", what, l)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// backend is the upstream: it reads each request whole and answers
// with its size and SHA-256; /fail answers 500. It keeps every request
// it took.
type backend struct {
	*httptest.Server
	mu       sync.Mutex
	requests []delivery
}

type delivery struct {
	group  string // X-Upload-Group
	header string // X-Test
	method string
	path   string
	bytes  int64
	sha256 string
}

func startBackend(t *testing.T) *backend {
	t.Helper()
	b := new(backend)
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			return
		}
		sum := hex.EncodeToString(h.Sum(nil))
		b.mu.Lock()
		b.requests = append(b.requests, delivery{group: r.Header.Get("X-Upload-Group"), header: r.Header.Get("X-Test"), method: r.Method, path: r.URL.Path, bytes: n, sha256: sum})
		b.mu.Unlock()
		code := http.StatusOK
		switch r.URL.Path {
		case "/fail":
			code = http.StatusInternalServerError
		case "/escape": // an answer that would clear the terminal and move the cursor
			w.WriteHeader(code)
			fmt.Fprintf(w, "{\"bytes\":%d}\x1b[2J\x1b[H\r\x07\n\tend", n)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"bytes":%d,"sha256":"%s"}`, n, sum)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) deliveries() []delivery {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]delivery(nil), b.requests...)
}

// terminal is a tmux session of its own server (-L), 120x40, running a
// shell command; the session stays after the command ends, so that its
// last screen can be read.
type terminal struct {
	t      *testing.T
	socket string
}

func newTerminal(t *testing.T) *terminal {
	t.Helper()
	needTmux(t)
	term := &terminal{t: t, socket: fmt.Sprintf("progresscmd-%d-%d", os.Getpid(), testkit.FreePort(t))}
	// the shell runs without CI, as a person's terminal does: CI, which
	// .ci/run sets, makes the terminal libraries assume no terminal and
	// drop colours
	term.tmux("new-session", "-d", "-s", "main", "-x", "120", "-y", "40", "env -u CI sh")
	term.tmux("set-option", "-t", "main", "history-limit", "0")
	t.Cleanup(func() { exec.Command("tmux", "-L", term.socket, "kill-server").Run() })
	return term
}

func (term *terminal) tmux(args ...string) string {
	term.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", term.socket}, args...)...).CombinedOutput()
	if err != nil {
		term.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// run types a command line into the terminal's shell.
func (term *terminal) run(line string) {
	term.t.Helper()
	term.waitForShell()
	term.tmux("send-keys", "-t", "main", "clear; "+line, "Enter")
}

// waitForShell waits until the shell runs nothing in the foreground: a
// program that was told to quit (top on q) may still be reading the
// terminal for a moment after its screen is gone, and would take keys
// meant for the shell.
func (term *terminal) waitForShell() {
	term.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cmd := strings.TrimSpace(term.tmux("display-message", "-p", "-t", "main", "#{pane_current_command}"))
		if cmd == "sh" || cmd == "env" {
			return
		}
		if time.Now().After(deadline) {
			term.t.Fatalf("the shell still runs %q after 30s; the terminal shows:\n%s", cmd, term.screen())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// keys sends keys (tmux names: q, C-c, f).
func (term *terminal) keys(keys ...string) {
	term.t.Helper()
	term.tmux(append([]string{"send-keys", "-t", "main"}, keys...)...)
}

// screen is what the terminal shows now.
func (term *terminal) screen() string {
	term.t.Helper()
	return term.tmux("capture-pane", "-p", "-t", "main")
}

// waitFor waits until the screen satisfies ok, and returns that screen.
func (term *terminal) waitFor(what string, ok func(screen string) bool) string {
	term.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		s := term.screen()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			term.t.Fatalf("waited 60s for %s; the terminal shows:\n%s", what, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lineWith is the first line of screen that contains s, or "".
func lineWith(screen, s string) string {
	for _, l := range strings.Split(screen, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
