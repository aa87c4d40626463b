package progresscmd_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testkit"
)

// tokenSite is a site in token mode (status_access token) with a
// resumable endpoint at /files/ delivering to /upload.
func tokenSite(b *backend, rateLimit string) string {
	limit := ""
	if rateLimit != "" {
		limit = "\t\trate_limit " + rateLimit + "\n"
	}
	return fmt.Sprintf("\tupload_progress {\n\t\tstatus_access token\n\t\ttoken_secret 0123456789abcdef0123456789abcdef\n%s\t\tresumable /files/ {\n\t\t\tdir {dir}/uploads\n\t\t\tdeliver_to /upload\n\t\t}\n\t}\n\treverse_proxy %s\n",
		limit, b.Listener.Addr())
}

func TestSendResumableInTokenModeGoesOnAfterBeingKilled(t *testing.T) {
	b := startBackend(t)
	// 32 MiB at 4MiB/s: more than the loopback socket buffers hold, so
	// the proxy still lacks bytes when send is killed
	p := startProxy(t, tokenSite(b, "4MiB"))
	dir := t.TempDir()
	body, path := writeFile(t, dir, "big.bin", 20, 32<<20)
	cache := filepath.Join(dir, "cache")
	pidFile := filepath.Join(dir, "send.pid")
	send := fmt.Sprintf("%s upload-progress send %s --resumable --new-group --to %s/files/", shellQuote(caddyBin), shellQuote(path), p.site)
	term := newTerminal(t)
	// the first run writes its PID, to be killed (SIGKILL: no goodbye to
	// the proxy); stty sane gives the shell its terminal back
	term.run(fmt.Sprintf("XDG_CACHE_HOME=%s sh -c %s; stty sane; echo KILLED", shellQuote(cache), shellQuote("echo $$ > "+shellQuote(pidFile)+"; exec "+send)))
	p.waitForListing(t, "a quarter of the file at the proxy", func(l listing) bool {
		for _, tr := range l.Trackers {
			for _, u := range tr.Uploads {
				if u.Received >= 1<<20 {
					return true
				}
			}
		}
		return false
	})
	pidText, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("killing send: %v", err)
	}
	killed := term.waitFor("the shell after the kill", func(s string) bool { return strings.Contains(s, "KILLED") })
	group, groupToken := printedGroup(killed)
	if group == "" || groupToken == "" {
		t.Fatalf("the first run did not print its group and token:\n%s", killed)
	}
	p.waitForListing(t, "the upload to pause", func(l listing) bool {
		for _, tr := range l.Trackers {
			for _, u := range tr.Uploads {
				return u.Status == "paused"
			}
		}
		return false
	})
	if got := b.deliveries(); len(got) != 0 {
		t.Fatalf("the backend got %d deliveries of an upload stopped part-way", len(got))
	}

	// the upload's URL is kept with its token, and the proxy takes no
	// request on it without the token
	kept, _ := filepath.Glob(filepath.Join(cache, "caddy-upload-progress", "resumable", "*.json"))
	if len(kept) != 1 {
		t.Fatalf("send keeps %d upload URLs, want 1: %v", len(kept), kept)
	}
	var stored struct{ URL, Token string }
	if data, err := os.ReadFile(kept[0]); err != nil || json.Unmarshal(data, &stored) != nil || stored.URL == "" || stored.Token == "" {
		t.Fatalf("the kept upload %s is %+v (%v), want its URL and token", kept[0], stored, err)
	}
	head := func(token string) int {
		req, _ := http.NewRequest(http.MethodHead, stored.URL, nil)
		req.Header.Set("Tus-Resumable", "1.0.0")
		if token != "" {
			req.Header.Set("X-Upload-Token", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if without, with := head(""), head(stored.Token); without != http.StatusNotFound || with != http.StatusOK {
		t.Fatalf("HEAD on the upload answers %d without the token and %d with it, want 404 and 200 (token mode)", without, with)
	}

	term.run("XDG_CACHE_HOME=" + shellQuote(cache) + " " + send + "; echo EXIT=$?")
	resumed := term.waitFor("the second run to resume", func(s string) bool { return strings.Contains(s, "resuming at ") })
	if line := lineWith(resumed, "resuming at "); !strings.Contains(line, " of 32 MiB") || strings.Contains(line, "resuming at 0 B") {
		t.Errorf("the second run says %q, want it to resume part-way", line)
	}
	end := term.waitFor("the second run to end", func(s string) bool { return strings.Contains(s, "EXIT=") })
	answer := fmt.Sprintf(`{"bytes":%d,"sha256":"%s"}`, len(body), testkit.SHA256Hex(body))
	if !strings.Contains(end, "EXIT=0") || !strings.Contains(end, "big.bin: complete · 200 OK\n"+answer) || percentOf(end, "big.bin") != 100 {
		t.Errorf("the second run shows:\n%s\nwant it complete (100%%, from the proxy's progress read with the token) with the backend's answer %s", end, answer)
	}
	got := b.deliveries()
	if len(got) != 1 || got[0].path != "/upload" || got[0].bytes != int64(len(body)) || got[0].sha256 != testkit.SHA256Hex(body) {
		t.Fatalf("the backend got %+v, want one delivery of the %d bytes of the file", got, len(body))
	}
	// the second run went on in the first run's group
	if g, token := printedGroup(end); g != group || token != groupToken || got[0].group != group {
		t.Errorf("the second run printed group %q (token %q) and the delivery names %q, want the first run's %s", g, token, got[0].group, group)
	}
	if code, g := readGroup(t, p, group, groupToken); code != http.StatusOK || g.Status != "complete" || len(g.Uploads) != 1 {
		t.Errorf("the group read with its token: %d %+v, want 200, complete, the upload", code, g)
	}
	if left, _ := filepath.Glob(filepath.Join(cache, "caddy-upload-progress", "resumable", "*")); len(left) != 0 {
		t.Errorf("the finished upload's URL is still kept: %v", left)
	}
}

// printedGroup is the group and token that send --new-group printed.
func printedGroup(screen string) (group, token string) {
	for _, l := range strings.Split(screen, "\n") {
		l = strings.TrimSpace(l)
		if v, ok := strings.CutPrefix(l, "group token "); ok {
			token = v
		} else if v, ok := strings.CutPrefix(l, "group "); ok {
			group = v
		}
	}
	return group, token
}

// groupStatus is a group's status as the tests read it.
type groupStatus struct {
	Group   string `json:"group"`
	Status  string `json:"status"`
	Uploads []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	} `json:"uploads"`
}

// readGroup reads a group's status with token ("" for none).
func readGroup(t *testing.T, p *proxy, group, token string) (int, groupStatus) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, p.site+"/upload/status/?group="+group, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var g groupStatus
	json.NewDecoder(resp.Body).Decode(&g)
	return resp.StatusCode, g
}

// runSend runs send with args (output not a terminal) and returns its
// stdout, stderr and error.
func runSend(t *testing.T, cache string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(caddyBin, append([]string{"upload-progress", "send"}, args...)...)
	cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+cache)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func TestSendNewGroupInTokenModeMakesEveryFileAMember(t *testing.T) {
	b := startBackend(t)
	p := startProxy(t, tokenSite(b, ""))
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	for _, mode := range []struct {
		name string
		to   string
		args []string
	}{
		{"plain", p.site + "/upload", nil},
		{"resumable", p.site + "/files/", []string{"--resumable"}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			before := len(b.deliveries())
			var paths []string
			want := map[string]bool{}
			for i := range 3 {
				body, path := writeFile(t, dir, fmt.Sprintf("%s-%d.bin", mode.name, i), uint64(30+i), 100000+i*1000)
				paths = append(paths, path)
				want[testkit.SHA256Hex(body)] = true
			}
			stdout, stderr, err := runSend(t, cache, append(append(paths, "--new-group", "--to", mode.to), mode.args...)...)
			if err != nil {
				t.Fatalf("send --new-group: %v\n%s%s", err, stdout, stderr)
			}
			lines := strings.SplitN(stdout, "\n", 3)
			group, _ := strings.CutPrefix(lines[0], "group ")
			token, _ := strings.CutPrefix(lines[1], "group token ")
			if group == "" || group == lines[0] || token == "" || token == lines[1] {
				t.Fatalf("send --new-group printed %q first, want \"group <id>\" and \"group token <token>\"", stdout)
			}

			got := b.deliveries()[before:]
			if len(got) != 3 {
				t.Fatalf("the backend got %d uploads, want 3: %+v", len(got), got)
			}
			for _, d := range got {
				if !want[d.sha256] || d.group != group {
					t.Errorf("the backend got %d bytes (sha256 %s) in group %q, want one of the files in group %s", d.bytes, d.sha256, d.group, group)
				}
			}
			code, g := readGroup(t, p, group, token)
			if code != http.StatusOK || g.Status != "complete" || len(g.Uploads) != 3 {
				t.Fatalf("the group read with its token: %d %+v, want 200, complete, 3 members", code, g)
			}
			for _, u := range g.Uploads {
				if u.Status != "complete" {
					t.Errorf("member %s is %s, want complete", u.ID, u.Status)
				}
			}
			if code, _ := readGroup(t, p, group, ""); code != http.StatusNotFound {
				t.Errorf("the group read without its token answers %d, want 404", code)
			}
		})
	}
}

func TestSendJoinsAGroupWithItsTokenAndRefusesWithoutInTokenMode(t *testing.T) {
	b := startBackend(t)
	p := startProxy(t, tokenSite(b, ""))
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")

	resp, err := http.Post(p.site+"/upload/status/?group", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var reserved struct{ Group, Token string }
	json.NewDecoder(resp.Body).Decode(&reserved)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || reserved.Group == "" || reserved.Token == "" {
		t.Fatalf("the group reservation answered %d %+v", resp.StatusCode, reserved)
	}

	// without the group's token, send says why and sends nothing
	_, path := writeFile(t, dir, "a.bin", 40, 50000)
	stdout, stderr, err := runSend(t, cache, path, "--group", reserved.Group, "--to", p.site+"/upload")
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() == 0 {
		t.Fatalf("send --group without its token in token mode: %v, want a non-zero exit status\n%s", err, stdout)
	}
	if !strings.Contains(stderr, "--group "+reserved.Group+": the proxy has status_access token") || !strings.Contains(stderr, "--group-token") {
		t.Errorf("send --group without its token says %q, want the reason and --group-token", stderr)
	}
	if got := b.deliveries(); len(got) != 0 {
		t.Fatalf("the backend got %+v, want nothing", got)
	}

	// with it, a plain and a resumable upload join the group
	_, other := writeFile(t, dir, "b.bin", 41, 60000)
	for _, args := range [][]string{
		{path, "--to", p.site + "/upload"},
		{other, "--resumable", "--to", p.site + "/files/"},
	} {
		if stdout, stderr, err := runSend(t, cache, append(args, "--group", reserved.Group, "--group-token", reserved.Token)...); err != nil {
			t.Fatalf("send %v: %v\n%s%s", args, err, stdout, stderr)
		} else if strings.HasPrefix(stdout, "group ") {
			t.Errorf("send --group printed %q first: only a group it reserved is printed", stdout)
		}
	}
	for _, d := range b.deliveries() {
		if d.group != reserved.Group {
			t.Errorf("the backend got an upload in group %q, want %s", d.group, reserved.Group)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, g := readGroup(t, p, reserved.Group, reserved.Token)
		if code == http.StatusOK && len(g.Uploads) == 2 && g.Status == "complete" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the group read with its token: %d %+v, want 200, complete, the 2 uploads", code, g)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
