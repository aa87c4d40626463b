package progresscmd_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testkit"
)

// writeFile writes a file of size deterministic bytes in dir.
func writeFile(t *testing.T, dir, name string, seed uint64, size int) ([]byte, string) {
	t.Helper()
	body := testkit.Payload(seed, size)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	return body, path
}

func TestSendShowsEachFileAndAllThenTheAnswers(t *testing.T) {
	b := startBackend(t)
	p := startProxy(t, fmt.Sprintf("\tupload_progress {\n\t\trate_limit 512KiB\n\t}\n\treverse_proxy %s\n", b.Listener.Addr()))
	dir := t.TempDir()
	one, onePath := writeFile(t, dir, "one.bin", 10, 1<<20)
	two, twoPath := writeFile(t, dir, "two.bin", 11, 600000)
	term := newTerminal(t)
	term.run(fmt.Sprintf("%s upload-progress send %s %s --to %s/upload -H 'X-Test: yes' --group batch-send; echo EXIT=$?",
		shellQuote(caddyBin), shellQuote(onePath), shellQuote(twoPath), p.site))

	partway := term.waitFor("both files and all part-way", func(s string) bool {
		n := percentOf(s, "all")
		return n > 0 && n < 100 && percentOf(s, "one.bin") > 0 && percentOf(s, "two.bin") > 0
	})
	for _, name := range []string{"one.bin", "two.bin", "all"} {
		if line := lineWith(partway, "  "+name+" "); !strings.Contains(line, "█") {
			t.Errorf("%s's line part-way is %q, want a bar", name, line)
		}
	}
	if line := lineWith(partway, "  all "); !strings.Contains(line, " / 1.6 MiB") {
		t.Errorf("the line for all is %q, want a total of 1.6 MiB", line)
	}
	end := term.waitFor("send to end", func(s string) bool { return strings.Contains(s, "EXIT=") })
	if !strings.Contains(end, "EXIT=0") {
		t.Errorf("send's exit status is not 0:\n%s", end)
	}
	for _, f := range []struct {
		name string
		body []byte
	}{{"one.bin", one}, {"two.bin", two}} {
		if line := lineWith(end, "  "+f.name+" "); percentOf(end, f.name) != 100 || !strings.HasSuffix(strings.TrimSpace(line), "complete") {
			t.Errorf("%s's last line is %q, want 100%% complete", f.name, line)
		}
		answer := fmt.Sprintf(`{"bytes":%d,"sha256":"%s"}`, len(f.body), testkit.SHA256Hex(f.body))
		if !strings.Contains(end, f.name+": complete · 200 OK\n"+answer) {
			t.Errorf("send did not print %s's outcome and the backend's answer %s:\n%s", f.name, answer, end)
		}
	}
	got := b.deliveries()
	if len(got) != 2 {
		t.Fatalf("the backend got %d requests, want 2: %+v", len(got), got)
	}
	for _, d := range got {
		if d.sha256 != testkit.SHA256Hex(one) && d.sha256 != testkit.SHA256Hex(two) {
			t.Errorf("the backend got %d bytes that are neither file: %+v", d.bytes, d)
		}
		if d.group != "batch-send" || d.header != "yes" {
			t.Errorf("the backend got X-Upload-Group %q and X-Test %q, want batch-send (--group) and yes (-H)", d.group, d.header)
		}
	}
}

func TestSendExitsNonZeroWithTheReasonWhenAnUploadFails(t *testing.T) {
	b := startBackend(t)
	p := startProxy(t, fmt.Sprintf("\tupload_progress\n\treverse_proxy %s\n", b.Listener.Addr()))
	body, path := writeFile(t, t.TempDir(), "f.bin", 12, 100000)
	cmd := exec.Command(caddyBin, "upload-progress", "send", path, "--to", p.site+"/fail")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() == 0 {
		t.Fatalf("send of an upload the backend refuses: %v, want a non-zero exit status", err)
	}
	want := fmt.Sprintf("f.bin: error · 500 Internal Server Error · upstream answered 500\n{\"bytes\":%d,\"sha256\":\"%s\"}\n",
		len(body), testkit.SHA256Hex(body))
	if stdout.String() != want {
		t.Errorf("send printed %q, want %q", stdout.String(), want)
	}
	if !strings.Contains(stderr.String(), "1 of 1 uploads did not complete: f.bin error (upstream answered 500)") {
		t.Errorf("send's error output %q does not give the reason", stderr.String())
	}
}

func TestSendResumableGoesOnAfterCtrlC(t *testing.T) {
	b := startBackend(t)
	// 32 MiB at 4MiB/s: more than the loopback socket buffers hold (they
	// grow to several MiB), so the proxy still lacks bytes when send is
	// interrupted, and pauses
	p := startProxy(t, fmt.Sprintf("\tupload_progress {\n\t\trate_limit 4MiB\n\t\tresumable /files/ {\n\t\t\tdir {dir}/uploads\n\t\t\tdeliver_to /upload\n\t\t}\n\t}\n\treverse_proxy %s\n", b.Listener.Addr()))
	dir := t.TempDir()
	body, path := writeFile(t, dir, "big.bin", 13, 32<<20)
	send := fmt.Sprintf("XDG_CACHE_HOME=%s %s upload-progress send %s --resumable --to %s/files/; echo EXIT=$?",
		shellQuote(filepath.Join(dir, "cache")), shellQuote(caddyBin), shellQuote(path), p.site)
	term := newTerminal(t)
	term.run(send)
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
	term.keys("C-c")
	stopped := term.waitFor("send to stop on Ctrl-C", func(s string) bool { return strings.Contains(s, "EXIT=") })
	if !strings.Contains(stopped, "big.bin: interrupted · run the same command again to resume") || strings.Contains(stopped, "EXIT=0") {
		t.Fatalf("after Ctrl-C, send shows:\n%s", stopped)
	}
	// the proxy reads what was already on its way, then pauses the upload
	p.waitForListing(t, "the upload to pause", func(l listing) bool {
		for _, tr := range l.Trackers {
			for _, u := range tr.Uploads {
				return u.Status == "paused"
			}
		}
		return false
	})
	var paused int64
	for _, tr := range p.listing(t).Trackers {
		for _, u := range tr.Uploads {
			paused = u.Received
		}
	}
	if paused >= int64(len(body)) {
		t.Fatalf("the proxy has %d bytes of the %d after Ctrl-C: the test needs a slower upload", paused, len(body))
	}
	if got := b.deliveries(); len(got) != 0 {
		t.Fatalf("the backend got %d deliveries of an upload stopped part-way", len(got))
	}

	term.run(send)
	resumed := term.waitFor("the second run to resume", func(s string) bool { return strings.Contains(s, "resuming at ") })
	if line := lineWith(resumed, "resuming at "); !strings.Contains(line, " of 32 MiB") || strings.Contains(line, "resuming at 0 B") {
		t.Errorf("the second run says %q, want it to resume part-way (the proxy had %d bytes)", line, paused)
	}
	end := term.waitFor("the second run to end", func(s string) bool { return strings.Contains(s, "EXIT=") })
	answer := fmt.Sprintf(`{"bytes":%d,"sha256":"%s"}`, len(body), testkit.SHA256Hex(body))
	if !strings.Contains(end, "EXIT=0") || !strings.Contains(end, "big.bin: complete · 200 OK\n"+answer) {
		t.Errorf("the second run shows:\n%s\nwant it complete with the backend's answer %s", end, answer)
	}
	got := b.deliveries()
	if len(got) != 1 || got[0].path != "/upload" || got[0].bytes != int64(len(body)) || got[0].sha256 != testkit.SHA256Hex(body) {
		t.Fatalf("the backend got %+v, want one delivery of the %d bytes of the file", got, len(body))
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "cache", "caddy-upload-progress", "resumable", "*")); len(left) != 0 {
		t.Errorf("the finished upload's URL is still kept: %v", left)
	}
}

func TestSendResumableGoesOnAfterTheProxyRestarts(t *testing.T) {
	b := startBackend(t)
	p := startProxy(t, fmt.Sprintf("\tupload_progress {\n\t\trate_limit 512KiB\n\t\tresumable /files/ {\n\t\t\tdir {dir}/uploads\n\t\t\tdeliver_to /upload\n\t\t}\n\t}\n\treverse_proxy %s\n", b.Listener.Addr()))
	dir := t.TempDir()
	body, path := writeFile(t, dir, "big.bin", 14, 3<<20)
	term := newTerminal(t)
	term.run(fmt.Sprintf("XDG_CACHE_HOME=%s %s upload-progress send %s --resumable --to %s/files/; echo EXIT=$?",
		shellQuote(filepath.Join(dir, "cache")), shellQuote(caddyBin), shellQuote(path), p.site))
	p.waitForListing(t, "a quarter of the file at the proxy", func(l listing) bool {
		for _, tr := range l.Trackers {
			for _, u := range tr.Uploads {
				if u.Received >= 768<<10 {
					return true
				}
			}
		}
		return false
	})
	// a crash: graceful stop would wait for the upload's request
	p.cmd.Process.Kill()
	p.cmd.Wait()
	p.start(t)

	end := term.waitFor("send to end", func(s string) bool { return strings.Contains(s, "EXIT=") })
	answer := fmt.Sprintf(`{"bytes":%d,"sha256":"%s"}`, len(body), testkit.SHA256Hex(body))
	if !strings.Contains(end, "EXIT=0") || !strings.Contains(end, "big.bin: complete · 200 OK\n"+answer) {
		t.Errorf("send across a proxy restart shows:\n%s\nwant it complete with the backend's answer %s", end, answer)
	}
	got := b.deliveries()
	if len(got) != 1 || got[0].bytes != int64(len(body)) || got[0].sha256 != testkit.SHA256Hex(body) {
		t.Fatalf("the backend got %+v, want one delivery of the %d bytes of the file", got, len(body))
	}
}

func TestSendPollsTheStatusRouteWithoutTheEventsRoute(t *testing.T) {
	b := startBackend(t)
	p := startProxy(t, fmt.Sprintf("\tupload_progress {\n\t\tevents_path off\n\t\tws_path off\n\t\tstatus_access token\n\t\tclient_ids off\n\t\trate_limit 512KiB\n\t}\n\treverse_proxy %s\n", b.Listener.Addr()))
	body, path := writeFile(t, t.TempDir(), "polled.bin", 15, 1<<20)
	term := newTerminal(t)
	term.run(fmt.Sprintf("%s upload-progress send %s --to %s/upload; echo EXIT=$?", shellQuote(caddyBin), shellQuote(path), p.site))
	term.waitFor("the file's bar part-way, from polling with the reservation's token", func(s string) bool {
		n := percentOf(s, "polled.bin")
		return n > 0 && n < 100
	})
	end := term.waitFor("send to end", func(s string) bool { return strings.Contains(s, "EXIT=") })
	answer := fmt.Sprintf(`{"bytes":%d,"sha256":"%s"}`, len(body), testkit.SHA256Hex(body))
	if !strings.Contains(end, "EXIT=0") || !strings.Contains(end, "polled.bin: complete · 200 OK\n"+answer) || percentOf(end, "polled.bin") != 100 {
		t.Errorf("send with the status route only shows:\n%s\nwant it complete with the backend's answer %s", end, answer)
	}
	var posts int
	for _, d := range b.deliveries() {
		if d.method == "POST" {
			posts++
		}
	}
	if posts != 1 {
		t.Errorf("the backend got %d uploads, want 1: %+v", posts, b.deliveries())
	}
}

func TestSendAndTopPrintNoControlCharactersOfOthers(t *testing.T) {
	b := startBackend(t)
	p := startProxy(t, fmt.Sprintf("\tupload_progress\n\treverse_proxy %s\n", b.Listener.Addr()))

	// a backend's answer
	_, path := writeFile(t, t.TempDir(), "f.bin", 16, 1000)
	out, err := exec.Command(caddyBin, "upload-progress", "send", path, "--to", p.site+"/escape").Output()
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if want := "f.bin: complete · 200 OK\n{\"bytes\":1000}?[2J?[H??\n\tend\n"; string(out) != want {
		t.Errorf("send printed %q, want %q", out, want)
	}

	// a client's file name
	form := []byte("--B\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"x\x1b[2Jy\"\r\n\r\n")
	form = append(form, testkit.Payload(17, 1000)...)
	stall(t, p, "named", form, 1<<20, http.Header{"Content-Type": {"multipart/form-data; boundary=B"}})
	once, err := exec.Command(caddyBin, "upload-progress", "top", "--once", "--admin", p.admin).Output()
	if err != nil {
		t.Fatalf("top --once: %v", err)
	}
	if strings.ContainsRune(string(once), 0x1b) || !strings.Contains(string(once), "x?[2Jy (doc)") {
		t.Errorf("top --once printed the file name's escape sequence, or not the name:\n%q", once)
	}
}

func TestSendResumableReportsARefusedCreation(t *testing.T) {
	b := startBackend(t)
	p := startProxy(t, fmt.Sprintf("\tupload_progress {\n\t\tresumable /files/ {\n\t\t\tdir {dir}/uploads\n\t\t\tmax_size 1KiB\n\t\t\tdeliver_to /upload\n\t\t}\n\t}\n\treverse_proxy %s\n", b.Listener.Addr()))
	dir := t.TempDir()
	_, path := writeFile(t, dir, "too-big.bin", 18, 4096)
	cmd := exec.Command(caddyBin, "upload-progress", "send", path, "--resumable", "--to", p.site+"/files/")
	cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() == 0 {
		t.Fatalf("send of a file over max_size: %v, want a non-zero exit status", err)
	}
	if first := strings.SplitN(stdout.String(), "\n", 2)[0]; first != "too-big.bin: error · 413 Request Entity Too Large · the proxy refused the upload: 413 Request Entity Too Large" {
		t.Errorf("send printed %q first, want the refusal as an error, not an interruption to resume", first)
	}
	if len(b.deliveries()) != 0 {
		t.Errorf("the backend got a refused upload: %+v", b.deliveries())
	}
}

func TestSendRateCapsTheSending(t *testing.T) {
	b := startBackend(t)
	p := startProxy(t, fmt.Sprintf("\tupload_progress\n\treverse_proxy %s\n", b.Listener.Addr())) // no rate_limit: only --rate slows it
	body, path := writeFile(t, t.TempDir(), "slow.bin", 19, 512<<10)
	term := newTerminal(t)
	term.run(fmt.Sprintf("%s upload-progress send %s --rate 128KiB --to %s/upload; echo EXIT=$?", shellQuote(caddyBin), shellQuote(path), p.site))
	term.waitFor("the file part-way at 128 KiB/s", func(s string) bool {
		n := percentOf(s, "slow.bin")
		return n > 0 && n < 100
	})
	end := term.waitFor("send to end", func(s string) bool { return strings.Contains(s, "EXIT=") })
	if !strings.Contains(end, "EXIT=0") || !strings.Contains(end, "slow.bin: complete · 200 OK\n"+fmt.Sprintf(`{"bytes":%d,"sha256":"%s"}`, len(body), testkit.SHA256Hex(body))) {
		t.Errorf("send --rate shows:\n%s", end)
	}
}
