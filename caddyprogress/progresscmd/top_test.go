package progresscmd_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testkit"
)

// percentOf is the percent shown on the line of upload id, -1 when the
// screen has no such line.
func percentOf(screen, id string) int {
	m := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(id) + ` .* (\d+)% `).FindStringSubmatch(screen)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// upload POSTs body through the proxy with the ID, in the background;
// its answer's status code arrives on the channel.
func upload(t *testing.T, p *proxy, id string, body io.Reader, length int64, header http.Header) <-chan int {
	t.Helper()
	done := make(chan int, 1)
	req, err := http.NewRequest(http.MethodPost, p.site+"/upload", body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = length
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("X-Upload-ID", id)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	return done
}

func TestTopShowsABarMovingToItsFinalState(t *testing.T) {
	b := startBackend(t)
	p := startProxy(t, fmt.Sprintf("\tupload_progress {\n\t\trate_limit 256KiB\n\t}\n\treverse_proxy %s\n", b.Listener.Addr()))
	term := newTerminal(t)
	term.run(shellQuote(caddyBin) + " upload-progress top --interval 100ms --admin " + p.admin)
	term.waitFor("top's empty tracker", func(s string) bool { return strings.Contains(s, "no uploads") })

	body := testkit.Payload(1, 1536<<10)
	answered := upload(t, p, "top-1", bytes.NewReader(body), int64(len(body)), nil)
	first := term.waitFor("the upload's bar part-way", func(s string) bool {
		n := percentOf(s, "top-1")
		return n > 0 && n < 80
	})
	p1 := percentOf(first, "top-1")
	if line := lineWith(first, "top-1"); !strings.Contains(line, "█") || !strings.Contains(line, "░") || !strings.HasSuffix(strings.TrimSpace(line), "uploading") {
		t.Errorf("the upload's line part-way is %q, want a part-filled bar, uploading", line)
	}
	if header := lineWith(first, "tracker default"); !strings.Contains(header, "1 upload in flight") || !strings.Contains(header, "of 64 MiB") {
		t.Errorf("the tracker's line is %q, want 1 upload in flight and memory of 64 MiB", header)
	}
	if colored := term.tmux("capture-pane", "-p", "-e", "-t", "main"); !strings.Contains(colored, "\x1b[38;") {
		t.Errorf("the view has no colours without NO_COLOR:\n%q", colored)
	}
	term.waitFor("the bar to move", func(s string) bool { return percentOf(s, "top-1") > p1 })
	if code := <-answered; code != http.StatusOK {
		t.Fatalf("the upload got %d, want 200", code)
	}
	final := term.waitFor("the upload's final state", func(s string) bool {
		return strings.HasSuffix(strings.TrimSpace(lineWith(s, "top-1")), "complete")
	})
	if line := lineWith(final, "top-1"); percentOf(final, "top-1") != 100 || strings.Contains(line, "░") || !strings.Contains(line, "1.5 MiB / 1.5 MiB") {
		t.Errorf("the finished upload's line is %q, want a full bar, 100%%, 1.5 MiB / 1.5 MiB", line)
	}
	if header := lineWith(final, "tracker default"); !strings.Contains(header, "0 uploads in flight") {
		t.Errorf("the tracker's line once the upload ended is %q, want 0 uploads in flight", header)
	}
	term.waitFor("the finished upload to leave the screen", func(s string) bool { return !strings.Contains(s, "top-1") })

	term.keys("q")
	term.waitFor("top to quit on q", func(s string) bool { return !strings.Contains(s, "q quits") })

	// without colours, and quitting on Ctrl-C
	term.run("NO_COLOR=1 " + shellQuote(caddyBin) + " upload-progress top --interval 100ms --admin " + p.admin)
	term.waitFor("top's empty tracker", func(s string) bool { return strings.Contains(s, "no uploads") })
	answered = upload(t, p, "top-2", bytes.NewReader(body), int64(len(body)), nil)
	term.waitFor("the second upload", func(s string) bool { return percentOf(s, "top-2") >= 0 })
	if colored := term.tmux("capture-pane", "-p", "-e", "-t", "main"); strings.Contains(colored, "\x1b[38;") {
		t.Errorf("NO_COLOR=1, and the view has colours:\n%q", colored)
	}
	term.keys("C-c")
	term.waitFor("top to quit on Ctrl-C", func(s string) bool { return !strings.Contains(s, "q quits") })
	<-answered
}

func TestTopFitsANarrowTerminal(t *testing.T) {
	b := startBackend(t)
	p := startProxy(t, fmt.Sprintf("\tupload_progress {\n\t\trate_limit 64KiB\n\t}\n\treverse_proxy %s\n", b.Listener.Addr()))
	term := newTerminal(t)
	term.tmux("resize-window", "-t", "main", "-x", "80")
	term.run(shellQuote(caddyBin) + " upload-progress top --interval 100ms --admin " + p.admin)
	body := testkit.Payload(2, 512<<10)
	answered := upload(t, p, "a-rather-long-upload-id-for-80-columns", bytes.NewReader(body), int64(len(body)), nil)
	s := term.waitFor("the upload", func(s string) bool { return strings.Contains(s, "a-rather-long") })
	line := lineWith(s, "a-rather-long")
	if !strings.HasSuffix(strings.TrimSpace(line), "uploading") || !strings.Contains(line, "a-rather-long… ") {
		t.Errorf("at 80 columns the upload's line is %q, want its ID cut short and its state at the end", line)
	}
	for _, l := range strings.Split(s, "\n") {
		if n := len([]rune(l)); n > 80 {
			t.Errorf("a line is %d cells wide at 80 columns: %q", n, l)
		}
	}
	term.keys("q")
	<-answered
}

// stall starts an upload of length bytes with the ID that sends only
// prefix, then waits, until the test ends.
func stall(t *testing.T, p *proxy, id string, prefix []byte, length int64, header http.Header) {
	t.Helper()
	r, w := io.Pipe()
	answered := upload(t, p, id, r, length, header)
	go w.Write(prefix)
	t.Cleanup(func() {
		w.CloseWithError(io.ErrUnexpectedEOF)
		<-answered
	})
	p.waitForListing(t, id+" to receive its first bytes", func(l listing) bool {
		for _, tr := range l.Trackers {
			for _, u := range tr.Uploads {
				if u.ID == id && u.Received == int64(len(prefix)) {
					return true
				}
			}
		}
		return false
	})
}

// normalized replaces what varies from run to run in top's output
// (speeds, the time left that follows from them, the start times, the
// memory the records take, the admin port) with fixed words.
func normalized(s string) string {
	for _, r := range []struct{ re, with string }{
		{` +[\d.]+ (?:[KMGT]i)?B/s +(?:\d+[hms]\S*|-) +`, " <speed> <left> "},
		{`[\d.]+ (?:[KMGT]i)?B/s`, "<speed>"},
		{`memory [\d.]+ (?:[KMGT]i)?B of`, "memory <memory> of"},
		{`"speed": \d+`, `"speed": 0`},
		{`"memory": \d+`, `"memory": 0`},
		{`"started_at": "[^"]+"`, `"started_at": "<time>"`},
		{`127\.0\.0\.1:\d+`, "127.0.0.1:<port>"},
	} {
		s = regexp.MustCompile(r.re).ReplaceAllString(s, r.with)
	}
	return s
}

func TestTopOnceAndJSONPrintOneSnapshot(t *testing.T) {
	b := startBackend(t)
	p := startProxy(t, fmt.Sprintf("\tupload_progress\n\treverse_proxy %s\n", b.Listener.Addr()))
	stall(t, p, "plain-1", testkit.Payload(3, 300000), 1<<20, http.Header{"X-Upload-Group": {"batch"}})
	form := []byte("--B\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"a.bin\"\r\n" +
		"Content-Type: application/octet-stream\r\n\r\n")
	form = append(form, testkit.Payload(4, 100000)...)
	stall(t, p, "form-1", form, 2<<20, http.Header{"Content-Type": {"multipart/form-data; boundary=B"}})

	once, err := exec.Command(caddyBin, "upload-progress", "top", "--once", "--admin", p.admin).Output()
	if err != nil {
		t.Fatalf("top --once: %v", err)
	}
	wantOnce := `upload-progress at 127.0.0.1:<port> · 2 uploads in flight · <speed>

tracker default · 2 uploads in flight · <speed> · memory <memory> of 64 MiB
  ID                     PROGRESS             %      RECEIVED / TOTAL       SPEED    LEFT STATE
  group batch            █████░░░░░░░░░░░░  28%     293 KiB / 1.0 MiB <speed> <left> uploading
    plain-1              █████░░░░░░░░░░░░  28%     293 KiB / 1.0 MiB <speed> <left> uploading
  form-1                 █░░░░░░░░░░░░░░░░   4%      98 KiB / 2.0 MiB <speed> <left> uploading
    a.bin (doc)                                                98 KiB uploading
`
	if got := normalized(string(once)); got != wantOnce {
		t.Errorf("top --once printed\n%s\nnormalized:\n%s\nwant:\n%s", once, got, wantOnce)
	}

	js, err := exec.Command(caddyBin, "upload-progress", "top", "--json", "--admin", p.admin, "--tracker", "default").Output()
	if err != nil {
		t.Fatalf("top --json: %v", err)
	}
	wantJSON := `{
  "uploads": 2,
  "speed": 0,
  "trackers": [
    {
      "name": "default",
      "records": 2,
      "memory": 0,
      "max_memory": 67108864,
      "uploads": [
        {
          "id": "plain-1",
          "status": "uploading",
          "received": 300000,
          "total": 1048576,
          "speed": 0,
          "started_at": "<time>",
          "group": "batch"
        },
        {
          "id": "form-1",
          "status": "uploading",
          "received": 100109,
          "total": 2097152,
          "speed": 0,
          "started_at": "<time>",
          "files": [
            {
              "field": "doc",
              "filename": "a.bin",
              "received": 100000,
              "status": "uploading"
            }
          ]
        }
      ]
    }
  ]
}
`
	if got := normalized(string(js)); got != wantJSON {
		t.Errorf("top --json printed\n%s\nnormalized:\n%s\nwant:\n%s", js, got, wantJSON)
	}

	none, err := exec.Command(caddyBin, "upload-progress", "top", "--once", "--admin", p.admin, "--tracker", "other").Output()
	if err != nil {
		t.Fatalf("top --once --tracker other: %v", err)
	}
	if want := "upload-progress at 127.0.0.1:<port> · 0 uploads in flight · <speed>\nno tracker named \"other\" is in use\n"; normalized(string(none)) != want {
		t.Errorf("top --once --tracker other printed %q, want %q", none, want)
	}
}

func TestTopShowsAndHidesTheFilesOfAMultipartUpload(t *testing.T) {
	b := startBackend(t)
	p := startProxy(t, fmt.Sprintf("\tupload_progress\n\treverse_proxy %s\n", b.Listener.Addr()))
	form := []byte("--B\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nholiday\r\n" +
		"--B\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"beach.jpg\"\r\n\r\n")
	form = append(form, testkit.Payload(5, 5000)...)
	stall(t, p, "form-2", form, 1<<20, http.Header{"Content-Type": {"multipart/form-data; boundary=B"}})

	term := newTerminal(t)
	term.run(shellQuote(caddyBin) + " upload-progress top --interval 100ms --admin " + p.admin)
	hidden := term.waitFor("the upload with its files hidden", func(s string) bool { return strings.Contains(s, "2 files (f shows them)") })
	if strings.Contains(hidden, "beach.jpg") {
		t.Errorf("the files show before f:\n%s", hidden)
	}
	term.keys("f")
	shown := term.waitFor("the files", func(s string) bool { return strings.Contains(s, "beach.jpg (photo)") })
	if line := lineWith(shown, "title"); !strings.HasSuffix(strings.TrimSpace(line), "7 B complete") {
		t.Errorf("the form field's line is %q, want 7 B complete", line)
	}
	if line := lineWith(shown, "beach.jpg (photo)"); !strings.HasSuffix(strings.TrimSpace(line), "4.9 KiB uploading") {
		t.Errorf("the file's line is %q, want 4.9 KiB uploading", line)
	}
	term.keys("f")
	term.waitFor("the files hidden again", func(s string) bool { return strings.Contains(s, "2 files (f shows them)") })
	term.keys("q")
}

func TestTopReadsAnAdminEndpointOnAUnixSocket(t *testing.T) {
	b := startBackend(t)
	socket := "unix/" + t.TempDir() + "/admin.sock"
	p := startProxyWithAdmin(t, socket, fmt.Sprintf("\tupload_progress\n\treverse_proxy %s\n", b.Listener.Addr()))
	stall(t, p, "over-a-socket", testkit.Payload(6, 1000), 2000, nil)
	once, err := exec.Command(caddyBin, "upload-progress", "top", "--once", "--admin", socket).CombinedOutput()
	if err != nil {
		t.Fatalf("top --once --admin %s: %v\n%s", socket, err, once)
	}
	if !strings.HasPrefix(string(once), "upload-progress at "+socket) || !strings.Contains(string(once), "tracker default · 1 upload in flight") ||
		!strings.Contains(string(once), "  over-a-socket ") {
		t.Errorf("top --once over a unix socket printed:\n%s", once)
	}
}
