package progresscmd_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

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
	p := startProxy(t, tokenSite(b, "512KiB"))
	dir := t.TempDir()
	body, path := writeFile(t, dir, "big.bin", 20, 4<<20)
	cache := filepath.Join(dir, "cache")
	pidFile := filepath.Join(dir, "send.pid")
	send := fmt.Sprintf("%s upload-progress send %s --resumable --to %s/files/", shellQuote(caddyBin), shellQuote(path), p.site)
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
	term.waitFor("the shell after the kill", func(s string) bool { return strings.Contains(s, "KILLED") })
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
	if line := lineWith(resumed, "resuming at "); !strings.Contains(line, " of 4.0 MiB") || strings.Contains(line, "resuming at 0 B") {
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
	if left, _ := filepath.Glob(filepath.Join(cache, "caddy-upload-progress", "resumable", "*")); len(left) != 0 {
		t.Errorf("the finished upload's URL is still kept: %v", left)
	}
}
