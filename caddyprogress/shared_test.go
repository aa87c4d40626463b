package caddyprogress

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/redistracker"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

// The tests of several instances sharing a tracker run several Caddy
// processes (internal/clustertest); these check the configuration and
// what one in-process instance stores in a real redis-server.

func TestCaddyfileRedis(t *testing.T) {
	var h Handler
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("upload_progress {\n\tredis {env.REDIS_URL}\n}")); err != nil {
		t.Fatal(err)
	}
	if h.Redis != "{env.REDIS_URL}" {
		t.Fatalf("redis = %q", h.Redis)
	}
	for _, bad := range []string{"upload_progress {\n\tredis\n}", "upload_progress {\n\tredis a b\n}"} {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil || !strings.Contains(err.Error(), "redis: expected one argument") {
			t.Errorf("%q: error %v", bad, err)
		}
	}
}

func TestOneTrackerWithTwoRedisSettingsIsAConfigError(t *testing.T) {
	rs := testredis.Start(t)
	up := newUpstream(t)
	site1 := fmt.Sprintf("http://127.0.0.1:%d", testcaddy.FreePort(t))
	site2 := fmt.Sprintf("http://127.0.0.1:%d", testcaddy.FreePort(t))
	for _, second := range []string{"\t\tredis redis://" + rs.Addr() + "/1", ""} {
		cfg := testcaddy.GlobalOptions +
			siteBlock(site1, "\t\ttracker shared\n\t\tredis "+rs.URL(), up.host) +
			siteBlock(site2, "\t\ttracker shared\n"+second, up.host)
		err := loadErr(t, cfg)
		if err == nil {
			_ = caddy.Stop()
			t.Fatalf("second handler %q: loaded", second)
		}
		if !strings.Contains(err.Error(), `tracker "shared": one handler sets redis`) || !strings.Contains(err.Error(), "must set the same redis") {
			t.Errorf("second handler %q: error %v", second, err)
		}
	}
}

func TestRedisURLErrorsSayWhatIsWrong(t *testing.T) {
	up := newUpstream(t)
	site := fmt.Sprintf("http://127.0.0.1:%d", testcaddy.FreePort(t))
	t.Setenv("UPLOAD_PROGRESS_TEST_REDIS", "")
	err := loadErr(t, testcaddy.GlobalOptions+siteBlock(site, "\t\tredis {env.UPLOAD_PROGRESS_TEST_REDIS}", up.host))
	if err == nil || !strings.Contains(err.Error(), "redis is empty once its placeholders are replaced") {
		t.Errorf("unset placeholder: %v", err)
	}
	err = loadErr(t, testcaddy.GlobalOptions+siteBlock(site, "\t\tredis redis://user:s3cret-pw@127.0.0.1:notaport/0", up.host))
	t.Logf("bad URL: %v", err)
	if err == nil || strings.Contains(err.Error(), "s3cret-pw") || !strings.Contains(err.Error(), "redis") {
		t.Errorf("bad URL: %v (it must name the problem, never the password)", err)
	}
}

func TestRedisPlaceholderAndWhatTheTrackerStores(t *testing.T) {
	rs := testredis.Start(t)
	t.Setenv("UPLOAD_PROGRESS_TEST_REDIS", rs.URL())
	up := newUpstream(t)
	p := startProxy(t, "\t\ttracker site-a\n\t\tredis {env.UPLOAD_PROGRESS_TEST_REDIS}", up.host)
	data := payload(256 << 10)
	resp, _ := p.upload(t, http.MethodPost, "/upload", strings.NewReader(string(data)), int64(len(data)), http.Header{"X-Upload-ID": {"stored-1"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upload: %s", resp.Status)
	}
	if got, _ := up.get("stored-1"); got.sha256 != sha256Hex(data) {
		t.Fatal("the upstream got other bytes")
	}
	// the final document reaches Redis under the tracker's namespace
	client := rs.Client(t)
	key := "upload_progress:{site-a:stored-1}:record"
	var st, doc string
	for range 100 {
		f, err := client.HMGet(context.Background(), key, "st", "doc").Result()
		if err != nil {
			t.Fatal(err)
		}
		st, _ = f[0].(string)
		doc, _ = f[1].(string)
		if st == "complete" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st != "complete" || !strings.Contains(doc, `"received":262144`) || !strings.Contains(doc, `"status":"complete"`) {
		t.Fatalf("Redis holds %s = %q %q", key, st, doc)
	}
	// an ID in flight on another instance (its own redistracker) gets 409 here
	other, err := redistracker.New(redistracker.Config{URL: rs.URL(), Tracker: "site-a"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Claim(context.Background(), "taken", "", progress.StateUploading, []byte(`{"id":"taken","status":"uploading"}`)); err != nil {
		t.Fatal(err)
	}
	resp, body := p.upload(t, http.MethodPost, "/upload", strings.NewReader("abc"), 3, http.Header{"X-Upload-ID": {"taken"}})
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), `"error"`) {
		t.Fatalf("an ID claimed by another instance: %s %s", resp.Status, body)
	}
}

func TestRedisSideSurvivesAReload(t *testing.T) {
	rs := testredis.Start(t)
	up := newUpstream(t)
	port := testcaddy.FreePort(t)
	site := fmt.Sprintf("http://127.0.0.1:%d", port)
	options := "\t\ttracker reloaded\n\t\tredis " + rs.URL()
	testcaddy.Run(t, testcaddy.GlobalOptions+siteBlock(site, options, up.host))
	p := &proxy{base: site, client: &http.Client{}}
	before := liveTracker("reloaded").sharedEntries()
	if len(before) != 1 {
		t.Fatalf("%d redis sides before the reload", len(before))
	}

	data := payload(1 << 20)
	body := &pacedReader{data: data, chunk: 64 << 10, stopAt: 256 << 10, release: make(chan struct{})}
	done := make(chan *http.Response, 1)
	go func() {
		resp, _ := p.upload(t, http.MethodPost, "/", body, int64(len(data)), http.Header{"X-Upload-ID": {"across-reload"}})
		done <- resp
	}()
	p.waitFor(t, "across-reload", "256 KiB received", func(_ int, s Status) bool { return s.Received == 256<<10 })

	testcaddy.Load(t, testcaddy.GlobalOptions+siteBlock(site, options+"\n\t\tinterval 50ms", up.host))
	after := liveTracker("reloaded").sharedEntries()
	if len(after) != 1 || after[0] != before[0] {
		t.Fatalf("the redis side was replaced by a reload with the same redis: %v, then %v", before, after)
	}
	close(body.release)
	if resp := <-done; resp.StatusCode != http.StatusOK {
		t.Fatalf("upload across the reload: %s", resp.Status)
	}
	client := rs.Client(t)
	var st string
	for range 200 {
		st, _ = client.HGet(context.Background(), "upload_progress:{reloaded:across-reload}:record", "st").Result()
		if st == "complete" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st != "complete" {
		t.Fatalf("Redis holds the upload as %q after the reload, want complete", st)
	}
}
