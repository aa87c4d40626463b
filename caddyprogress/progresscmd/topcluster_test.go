package progresscmd_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testkit"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

// twoProxies starts Redis and two Caddy processes, A and B, whose site
// shares the default tracker through it, before the backend.
func twoProxies(t *testing.T, options string) (a, b *proxy, rs *testredis.Server) {
	t.Helper()
	rs = testredis.Start(t)
	backend := startBackend(t)
	site := fmt.Sprintf("\tupload_progress {\n\t\tredis %s\n%s\t}\n\treverse_proxy %s\n", rs.URL(), options, backend.Listener.Addr())
	return startProxy(t, site), startProxy(t, site), rs
}

// instanceName is the name a proxy goes by across the cluster: its host
// name and process ID.
func (p *proxy) instanceName(t *testing.T) string {
	t.Helper()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s:%d", host, p.cmd.Process.Pid)
}

// waitForCluster waits until the proxy's cluster listing (?cluster=1)
// shows upload id with received bytes.
func (p *proxy) waitForCluster(t *testing.T, id string, received int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := p.adminClient().Get("http://" + p.adminHost() + "/upload_progress/?cluster=1")
		if err != nil {
			t.Fatal(err)
		}
		var l listing
		err = json.NewDecoder(resp.Body).Decode(&l)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, tr := range l.Trackers {
			for _, u := range tr.Uploads {
				if u.ID == id && u.Received == received {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 60s for %s at %d bytes in the cluster listing; it is %+v", id, received, l)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestTopShowsAnotherInstancesUploadMovingToItsFinalState(t *testing.T) {
	a, b, _ := twoProxies(t, "\t\trate_limit 256KiB\n")
	nameA, nameB := a.instanceName(t), b.instanceName(t)
	term := newTerminal(t)
	term.run(shellQuote(caddyBin) + " upload-progress top --interval 100ms --admin " + b.admin)
	term.waitFor("top's empty cluster view", func(s string) bool {
		return strings.Contains(s, "no uploads") && strings.Contains(s, "uploads of every instance; this one is "+nameB)
	})

	body := testkit.Payload(7, 2<<20)
	answered := upload(t, a, "on-a", bytes.NewReader(body), int64(len(body)), nil)
	first := term.waitFor("A's upload part-way on B's top", func(s string) bool {
		n := percentOf(s, "on-a")
		return n > 0 && n < 80
	})
	p1 := percentOf(first, "on-a")
	if line := lineWith(first, "on-a"); !strings.Contains(line, " "+nameA+" ") || !strings.Contains(line, "█") ||
		!strings.Contains(line, "░") || !strings.HasSuffix(strings.TrimSpace(line), "uploading") {
		t.Errorf("A's upload's line part-way is %q, want A's name %s, a part-filled bar, uploading", line, nameA)
	}
	if header := lineWith(first, "tracker default"); !strings.Contains(header, "1 upload in flight") {
		t.Errorf("the tracker's line is %q, want 1 upload in flight (A's)", header)
	}
	if top := lineWith(first, "upload-progress at"); !strings.Contains(top, "1 upload in flight") {
		t.Errorf("the totals are %q, want 1 upload in flight (A's)", top)
	}
	term.waitFor("the bar to move", func(s string) bool { return percentOf(s, "on-a") > p1 })
	if code := <-answered; code != http.StatusOK {
		t.Fatalf("the upload got %d, want 200", code)
	}
	final := term.waitFor("A's upload's final state", func(s string) bool {
		return strings.HasSuffix(strings.TrimSpace(lineWith(s, "on-a")), "complete")
	})
	if line := lineWith(final, "on-a"); percentOf(final, "on-a") != 100 || strings.Contains(line, "░") ||
		!strings.Contains(line, "2.0 MiB / 2.0 MiB") || !strings.Contains(line, " "+nameA+" ") {
		t.Errorf("A's finished upload's line is %q, want A's name, a full bar, 100%%, 2.0 MiB / 2.0 MiB", line)
	}
	term.waitFor("the finished upload to leave the screen", func(s string) bool { return !strings.Contains(s, "on-a") })
	term.keys("q")
	term.waitFor("top to quit on q", func(s string) bool { return !strings.Contains(s, "q quits") })
}

// drawnBar is the bar top draws at width, filled to fraction, without
// colours.
func drawnBar(width int, fraction float64) string {
	filled := int(math.Round(float64(width) * fraction))
	return strings.Repeat("█", filled) + strings.Repeat("░", width-filled)
}

func TestTopOnceAndJSONShowAnotherInstancesUpload(t *testing.T) {
	a, b, rs := twoProxies(t, "")
	nameA, nameB := a.instanceName(t), b.instanceName(t)
	stall(t, a, "remote-1", testkit.Payload(8, 300000), 1<<20, http.Header{"X-Upload-Group": {"batch"}})
	stall(t, b, "local-1", testkit.Payload(9, 100000), 2<<20, nil)
	b.waitForCluster(t, "remote-1", 300000)

	once, err := exec.Command(caddyBin, "upload-progress", "top", "--once", "--admin", b.admin).Output()
	if err != nil {
		t.Fatalf("top --once: %v", err)
	}
	// the instance column is as wide as the longest name (8 to 20
	// cells), and the bar takes what the 100 columns leave
	inst := min(20, max(8, len(nameA), len(nameB)))
	id := min(22, max(8, 100-61-(inst+1)-5))
	bar := min(60, max(5, 100-61-(inst+1)-id))
	row := func(name, instance string, fraction float64, rest string) string {
		return fmt.Sprintf("  %-*s %-*s %s %s\n", id, name, inst, instance, drawnBar(bar, fraction), rest)
	}
	wantOnce := "upload-progress at 127.0.0.1:<port> · 2 uploads in flight · <speed>\n\n" +
		"tracker default · 2 uploads in flight · <speed> · memory <memory> of 64 MiB\n" +
		"  redis up · uploads of every instance; this one is " + nameB + "\n" +
		fmt.Sprintf("  %-*s %-*s %-*s    %%      RECEIVED / TOTAL       SPEED    LEFT STATE\n", id, "ID", inst, "INSTANCE", bar, "PROGRESS") +
		row("group batch", "", 300000.0/(1<<20), " 28%     293 KiB / 1.0 MiB <speed> <left> uploading") +
		row("  remote-1", nameA, 300000.0/(1<<20), " 28%     293 KiB / 1.0 MiB <speed> <left> uploading") +
		row("local-1", nameB, 100000.0/(2<<20), "  4%      98 KiB / 2.0 MiB <speed> <left> uploading")
	if got := normalized(string(once)); got != wantOnce {
		t.Errorf("top --once printed\n%s\nnormalized:\n%s\nwant:\n%s", once, got, wantOnce)
	}

	js, err := exec.Command(caddyBin, "upload-progress", "top", "--json", "--admin", b.admin, "--tracker", "default").Output()
	if err != nil {
		t.Fatalf("top --json: %v", err)
	}
	wantJSON := fmt.Sprintf(`{
  "uploads": 2,
  "speed": 0,
  "trackers": [
    {
      "name": "default",
      "records": 1,
      "memory": 0,
      "max_memory": 67108864,
      "uploads": [
        {
          "id": "remote-1",
          "status": "uploading",
          "received": 300000,
          "total": 1048576,
          "speed": 0,
          "started_at": "<time>",
          "group": "batch",
          "instance": %[1]q
        },
        {
          "id": "local-1",
          "status": "uploading",
          "received": 100000,
          "total": 2097152,
          "speed": 0,
          "started_at": "<time>",
          "instance": %[2]q
        }
      ],
      "redis": [
        {
          "up": true,
          "since": "<time>"
        }
      ],
      "cluster": {
        "instance": %[2]q,
        "available": true,
        "in_flight": 2
      }
    }
  ]
}
`, nameA, nameB)
	since := regexp.MustCompile(`"since": "[^"]+"`)
	if got := since.ReplaceAllString(normalized(string(js)), `"since": "<time>"`); got != wantJSON {
		t.Errorf("top --json printed\n%s\nnormalized:\n%s\nwant:\n%s", js, got, wantJSON)
	}

	// --local: the instance at --admin alone, as before
	local, err := exec.Command(caddyBin, "upload-progress", "top", "--once", "--local", "--admin", b.admin).Output()
	if err != nil {
		t.Fatalf("top --once --local: %v", err)
	}
	if s := string(local); !strings.Contains(s, "redis up · uploads shown are this instance's\n") || !strings.Contains(s, "  local-1 ") ||
		strings.Contains(s, "remote-1") || strings.Contains(s, "INSTANCE") || !strings.Contains(s, "· 1 upload in flight") {
		t.Errorf("top --once --local printed\n%s\nwant local-1 alone, without an instance column", s)
	}

	// Redis stopped: B's uploads, and the cluster said unavailable
	rs.Kill()
	deadline := time.Now().Add(30 * time.Second)
	for {
		down, err := exec.Command(caddyBin, "upload-progress", "top", "--once", "--admin", b.admin).Output()
		if err != nil {
			t.Fatalf("top --once with Redis down: %v", err)
		}
		s := string(down)
		if strings.Contains(s, "cluster unavailable: uploads shown are this instance's ("+nameB+")\n") {
			if !strings.Contains(s, "  local-1 ") || strings.Contains(s, "remote-1") || !strings.Contains(s, "· 1 upload in flight") {
				t.Errorf("top --once with Redis down printed\n%s\nwant local-1 alone", s)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("top --once never said the cluster is unavailable after Redis stopped:\n%s", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestTopSaysWhenAnotherInstancesFilesAreNotShared(t *testing.T) {
	a, b, _ := twoProxies(t, "")
	// a form whose files' list takes more than the 64 KiB an instance
	// shares of an upload: A publishes its document without them
	var form bytes.Buffer
	for i := range 400 {
		fmt.Fprintf(&form, "--B\r\nContent-Disposition: form-data; name=\"f%03d\"; filename=\"%s-%03d.bin\"\r\n\r\n", i, strings.Repeat("n", 200), i)
		form.Write(testkit.Payload(uint64(i), 10))
		form.WriteString("\r\n")
	}
	stall(t, a, "many-files", form.Bytes(), 1<<20, http.Header{"Content-Type": {"multipart/form-data; boundary=B"}})
	b.waitForCluster(t, "many-files", int64(form.Len()))
	// and one whose files fit: they show under it as a local upload's do
	few := append([]byte("--B\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"a.bin\"\r\n\r\n"), testkit.Payload(11, 3000)...)
	stall(t, a, "few-files", few, 1<<20, http.Header{"Content-Type": {"multipart/form-data; boundary=B"}})
	b.waitForCluster(t, "few-files", int64(len(few)))

	once, err := exec.Command(caddyBin, "upload-progress", "top", "--once", "--admin", b.admin).Output()
	if err != nil {
		t.Fatalf("top --once: %v", err)
	}
	lines := strings.Split(string(once), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "  many-files ") {
			if i+1 >= len(lines) || lines[i+1] != "    files not shared: their instance shows them" {
				t.Errorf("top --once printed\n%s\nwant the upload's line followed by a line saying its files are not shared", once)
			}
			break
		}
		if i == len(lines)-1 {
			t.Fatalf("top --once printed no line of many-files:\n%s", once)
		}
	}
	if line := lineWith(string(once), "a.bin (doc)"); !strings.HasPrefix(line, "    a.bin (doc) ") || !strings.HasSuffix(line, " 2.9 KiB uploading") {
		t.Errorf("the file line of another instance's upload is %q, want a.bin (doc) with 2.9 KiB uploading", line)
	}
	js, err := exec.Command(caddyBin, "upload-progress", "top", "--json", "--admin", b.admin).Output()
	if err != nil {
		t.Fatalf("top --json: %v", err)
	}
	if strings.Count(string(js), `"files_truncated": true`) != 1 || strings.Count(string(js), `"files": [`) != 1 {
		t.Errorf("top --json printed\n%s\nwant files_truncated for many-files and the files of few-files", js)
	}
}

func TestTopWithInstancesFitsANarrowTerminal(t *testing.T) {
	a, b, _ := twoProxies(t, "")
	stall(t, a, "narrow-remote-upload-id", testkit.Payload(10, 5000), 10000, nil)
	b.waitForCluster(t, "narrow-remote-upload-id", 5000)
	term := newTerminal(t)
	term.tmux("resize-window", "-t", "main", "-x", "80")
	term.run(shellQuote(caddyBin) + " upload-progress top --interval 100ms --admin " + b.admin)
	s := term.waitFor("the other instance's upload", func(s string) bool { return strings.Contains(s, "narrow-") })
	if line := lineWith(s, "narrow-"); !strings.HasSuffix(strings.TrimSpace(line), "uploading") || !strings.Contains(line, " 50% ") {
		t.Errorf("at 80 columns the upload's line is %q, want 50%% and its state at the end", line)
	}
	for _, l := range strings.Split(s, "\n") {
		if n := len([]rune(l)); n > 80 {
			t.Errorf("a line is %d cells wide at 80 columns: %q", n, l)
		}
	}
	term.keys("q")
}
