package clustertest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testkit"
)

// BenchmarkGroupReadAmplification reproduces the memory probe of issue
// 15 (section 2) against one Caddy process with default settings: 100
// multipart uploads of 1,000 parts each, with 256-byte field and file
// names (about 620 KB a body), all in one group, held in flight (all
// but the closing boundary sent), while readers poll the group's
// status, single statuses, or follow the group's event stream. The
// figure is the process's peak RSS (VmHWM) against its idle RSS, for
// each row of the table:
//
//	go test -run '^$' -bench GroupReadAmplification -benchtime 1x ./internal/clustertest/
//
// BENCH_AMP_SECONDS sets how long the readers read (default 10; the
// probe read for 25); BENCH_AMP_PROFILE names a folder where each row
// leaves the process's heap and allocation profiles, its /debug/vars
// and its metrics, taken when the readers stop. Every answer is checked: a group status lists the
// 100 members without files, a single status has its files or is a 503
// with Retry-After, and the uploads arrive intact once let go.
func BenchmarkGroupReadAmplification(b *testing.B) {
	seconds := 10
	if s := os.Getenv("BENCH_AMP_SECONDS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			seconds = n
		}
	}
	rows := []ampRow{
		{name: "none"},
		{name: "4-group+4-single", group: 4, single: 4},
		{name: "8-group", group: 8},
		{name: "16-group", group: 16},
		{name: "4-group-escaped-names", group: 4, escaped: true},
		{name: "20-group-SSE-progressing", sse: 20, progressing: true},
	}
	for _, row := range rows {
		b.Run(row.name, func(b *testing.B) {
			for b.Loop() {
				row.run(b, time.Duration(seconds)*time.Second)
			}
		})
	}
}

// ampRow is one row of the probe.
type ampRow struct {
	name               string
	group, single, sse int  // readers of each kind
	escaped            bool // names made of '<' (six bytes each in JSON)
	progressing        bool // the bodies keep coming while the readers read
}

const (
	ampUploads = 100
	ampParts   = 1000
	ampGroup   = "probe"
)

// ampBody is one upload's body: its parts, then the closing boundary.
func ampBody(i int, escaped bool) (parts, closing []byte) {
	boundary := fmt.Sprintf("amp-boundary-%03d", i)
	name := func(kind byte, j int) string {
		if escaped {
			return strings.Repeat("<", 256)
		}
		prefix := fmt.Sprintf("%c%03d-%04d-", kind, i, j)
		return prefix + strings.Repeat("n", 256-len(prefix))
	}
	var sb strings.Builder
	for j := range ampParts {
		fmt.Fprintf(&sb, "--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\nContent-Type: application/octet-stream\r\n\r\n",
			boundary, name('f', j), name('g', j))
		sb.Write(testkit.Payload(uint64(i*ampParts+j), 10))
		sb.WriteString("\r\n")
	}
	return []byte(sb.String()), []byte("--" + boundary + "--\r\n")
}

// heldBody sends parts (at once, or spread over spread), then waits for
// release before the closing boundary.
type heldBody struct {
	parts, closing []byte
	spread         time.Duration
	off            int
	release        <-chan struct{}
	sentParts      chan<- struct{}
	signalled      bool
}

func (h *heldBody) Read(p []byte) (int, error) {
	if h.off < len(h.parts) {
		n := len(h.parts) - h.off
		if h.spread > 0 {
			step := len(h.parts)/100 + 1
			n = min(n, step)
			time.Sleep(h.spread / 100)
		}
		n = copy(p, h.parts[h.off:h.off+n])
		h.off += n
		return n, nil
	}
	if !h.signalled {
		h.signalled = true
		h.sentParts <- struct{}{}
		<-h.release
	}
	end := h.off - len(h.parts)
	if end >= len(h.closing) {
		return 0, io.EOF
	}
	n := copy(p, h.closing[end:])
	h.off += n
	return n, nil
}

func (row ampRow) run(b *testing.B, readFor time.Duration) {
	up := newUpstream(b)
	inst := startInstance(b, row.name, "", "", up.host)
	pid := inst.cmd.Process.Pid
	time.Sleep(500 * time.Millisecond) // let it settle
	idle := procStatusKB(b, pid, "VmRSS")

	release := make(chan struct{})
	sentParts := make(chan struct{}, ampUploads)
	results := make([]<-chan result, ampUploads)
	shas := make([]string, ampUploads)
	var bodyBytes, partsBytes int64
	spread := time.Duration(0)
	if row.progressing {
		spread = readFor
	}
	for i := range ampUploads {
		parts, closing := ampBody(i, row.escaped)
		whole := append(append([]byte{}, parts...), closing...)
		shas[i] = testkit.SHA256Hex(whole)
		bodyBytes = int64(len(whole))
		partsBytes += int64(len(parts))
		header := http.Header{}
		header.Set("Content-Type", fmt.Sprintf("multipart/form-data; boundary=amp-boundary-%03d", i))
		header.Set("X-Upload-Group", ampGroup)
		body := &heldBody{parts: parts, closing: closing, spread: spread, release: release, sentParts: sentParts}
		results[i] = inst.uploadAsync(fmt.Sprintf("amp-%03d", i), body, int64(len(whole)), header)
	}
	if !row.progressing {
		for range ampUploads {
			<-sentParts
		}
		awaitReceived(b, inst.base, partsBytes)
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	var reads, refused atomic.Int64
	var slowest atomic.Int64
	var failure atomic.Value
	fail := func(format string, args ...any) {
		failure.CompareAndSwap(nil, fmt.Sprintf(format, args...))
		stop.Store(true)
	}
	client := &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}}
	timed := func(f func() bool) {
		start := time.Now()
		ok := f()
		if d := time.Since(start).Milliseconds(); d > slowest.Load() {
			slowest.Store(d)
		}
		if ok {
			reads.Add(1)
		}
	}
	for range row.group {
		wg.Go(func() {
			for !stop.Load() {
				timed(func() bool { return readGroup(client, inst.base, fail, &refused) })
			}
		})
	}
	for k := range row.single {
		wg.Go(func() {
			for n := k; !stop.Load(); n += row.single {
				id := fmt.Sprintf("amp-%03d", n%ampUploads)
				timed(func() bool { return readSingle(client, inst.base, id, fail, &refused) })
			}
		})
	}
	for range row.sse {
		wg.Go(func() { followGroupEvents(client, inst.base, &stop, fail, &reads) })
	}
	time.Sleep(readFor)
	stop.Store(true)
	wg.Wait()
	peak := procStatusKB(b, pid, "VmHWM")
	if dir := os.Getenv("BENCH_AMP_PROFILE"); dir != "" { // what the process holds, for go tool pprof
		if resp, err := http.Get(inst.admin + "/debug/vars"); err == nil {
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			os.WriteFile(dir+"/"+row.name+".vars", data, 0o644)
		}
		if resp, err := http.Get(inst.admin + "/metrics"); err == nil {
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			os.WriteFile(dir+"/"+row.name+".metrics", data, 0o644)
		}
		for _, kind := range []string{"heap", "allocs"} {
			resp, err := http.Get(inst.admin + "/debug/pprof/" + kind)
			if err == nil {
				data, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				os.WriteFile(dir+"/"+row.name+"."+kind, data, 0o644)
			}
		}
	}
	b.Logf("%s: peak RSS %.1f MB, idle %.1f MB; %d reads (%d refused with 503), slowest %d ms",
		row.name, float64(peak)/1024, float64(idle)/1024, reads.Load(), refused.Load(), slowest.Load())

	close(release)
	for i, done := range results {
		r := <-done
		if r.err != nil || r.code != http.StatusOK {
			b.Errorf("upload %d: %d %v", i, r.code, r.err)
		} else if got := up.sha(fmt.Sprintf("amp-%03d", i)); got != shas[i] {
			b.Errorf("upload %d arrived with SHA-256 %s, want %s", i, got, shas[i])
		}
	}
	if f := failure.Load(); f != nil {
		b.Error(f)
	}
	b.ReportMetric(float64(idle)/1024, "idle-RSS-MB")
	b.ReportMetric(float64(peak)/1024, "peak-RSS-MB")
	b.ReportMetric(float64(peak-idle)/1024, "growth-MB")
	b.ReportMetric(float64(reads.Load()), "reads")
	b.ReportMetric(float64(refused.Load()), "503s")
	b.ReportMetric(float64(slowest.Load()), "slowest-read-ms")
	b.ReportMetric(float64(bodyBytes)/1000, "body-KB")
}

// awaitReceived waits until the group's members have received want
// bytes in all: every upload holds its parts, in flight.
func awaitReceived(b *testing.B, base string, want int64) {
	deadline := time.Now().Add(60 * time.Second)
	var got int64
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/upload/status/?group=" + ampGroup)
		if err == nil {
			var g struct {
				Received int64             `json:"received"`
				Uploads  []json.RawMessage `json:"uploads"`
			}
			err = json.NewDecoder(resp.Body).Decode(&g)
			resp.Body.Close()
			got = g.Received
			if err == nil && len(g.Uploads) == ampUploads && g.Received >= want {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Fatalf("the group received %d bytes of %d within 60s", got, want)
}

// readGroup reads the group's status once and checks it: 100 members,
// in flight, none with files; a 503 must carry Retry-After.
func readGroup(client *http.Client, base string, fail func(string, ...any), refused *atomic.Int64) bool {
	resp, err := client.Get(base + "/upload/status/?group=" + ampGroup)
	if err != nil {
		fail("group status: %v", err)
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusServiceUnavailable {
		checkRefusal(resp, fail)
		refused.Add(1)
		return false
	}
	var g struct {
		Status  string            `json:"status"`
		Uploads []json.RawMessage `json:"uploads"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil || resp.StatusCode != http.StatusOK {
		fail("group status: %d %v", resp.StatusCode, err)
		return false
	}
	if len(g.Uploads) != ampUploads || g.Status != "uploading" {
		fail("group status: %d members, %q; want %d uploading", len(g.Uploads), g.Status, ampUploads)
		return false
	}
	for _, m := range g.Uploads {
		if strings.Contains(string(m), `"files"`) {
			fail("a group member carries files: %.200s", m)
			return false
		}
	}
	return true
}

// readSingle reads one upload's status: its files, or a 503.
func readSingle(client *http.Client, base, id string, fail func(string, ...any), refused *atomic.Int64) bool {
	resp, err := client.Get(base + "/upload/status/" + id)
	if err != nil {
		fail("status of %s: %v", id, err)
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusServiceUnavailable {
		checkRefusal(resp, fail)
		refused.Add(1)
		return false
	}
	var s struct {
		ID             string            `json:"id"`
		Status         string            `json:"status"`
		Files          []json.RawMessage `json:"files"`
		FilesTruncated bool              `json:"files_truncated"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || resp.StatusCode != http.StatusOK {
		fail("status of %s: %d %v", id, resp.StatusCode, err)
		return false
	}
	if s.ID != id || s.Status != "uploading" {
		fail("status of %s: %+v", id, s)
		return false
	}
	return true
}

// checkRefusal checks a 503: Retry-After and a JSON error.
func checkRefusal(resp *http.Response, fail func(string, ...any)) {
	var e struct {
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error == "" || resp.Header.Get("Retry-After") == "" {
		fail("503 without Retry-After or JSON error: %q %q %v", resp.Header.Get("Retry-After"), e.Error, err)
	}
}

// followGroupEvents follows the group's event stream until stop, each
// event's data checked like a group status.
func followGroupEvents(client *http.Client, base string, stop *atomic.Bool, fail func(string, ...any), events *atomic.Int64) {
	req, _ := http.NewRequest(http.MethodGet, base+"/upload/events/?group="+ampGroup, nil)
	resp, err := client.Do(req)
	if err != nil {
		fail("group events: %v", err)
		return
	}
	defer resp.Body.Close()
	go func() {
		for !stop.Load() {
			time.Sleep(50 * time.Millisecond)
		}
		resp.Body.Close()
	}()
	_, _ = testkit.ReadEvents(bufio.NewReader(resp.Body), 16<<20, func(ev testkit.Event) bool {
		if ev.Name != "" && ev.Name != "pending" {
			fail("group events: unexpected %q event: %.200s", ev.Name, ev.Data)
			return false
		}
		if ev.Name == "" {
			if strings.Contains(ev.Data, `"files"`) {
				fail("a group event's member carries files")
				return false
			}
			events.Add(1)
		}
		return !stop.Load()
	})
}

// procStatusKB reads a field of /proc/<pid>/status, in kB.
func procStatusKB(b *testing.B, pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
