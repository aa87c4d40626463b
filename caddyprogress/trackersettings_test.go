package caddyprogress

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

// twoSites is a config of two sites, each with upload_progress and its
// options, on the same (default) tracker unless the options say.
func twoSites(t *testing.T, upstreamHost, options1, options2 string) (cfg, site1, site2 string) {
	t.Helper()
	site1 = fmt.Sprintf("http://127.0.0.1:%d", testcaddy.FreePort(t))
	site2 = fmt.Sprintf("http://127.0.0.1:%d", testcaddy.FreePort(t))
	cfg = testcaddy.GlobalOptions + siteBlock(site1, options1, upstreamHost) + siteBlock(site2, options2, upstreamHost)
	return cfg, site1, site2
}

// The case: one site keeps its progress private (status_access
// token, client_ids off), another on the same tracker shows it to
// anyone with the ID. That would give away the private site's uploads,
// so the config does not load, and the error names the setting and
// both values.
func TestPrivateAndPublicHandlersOnOneTrackerAreAConfigError(t *testing.T) {
	up := newUpstream(t)
	cfg, _, _ := twoSites(t, up.host, "\t\tstatus_access token\n\t\tclient_ids off", "")
	err := loadErr(t, cfg)
	if err == nil {
		_ = caddy.Stop()
		t.Fatal("a private and a public handler on one tracker loaded")
	}
	msg := err.Error()
	if !strings.Contains(msg, `tracker "default": one handler sets status_access `) ||
		!(strings.Contains(msg, "status_access token, another id;") || strings.Contains(msg, "status_access id, another token;")) ||
		!strings.Contains(msg, "must set the same status_access") {
		t.Fatalf("error %q; want it to name status_access, token and id", msg)
	}
}

// Each tracker-wide setting set differently on two handlers of one
// tracker is a config error naming it and both values (a secret is
// never shown); the same settings on two trackers load.
func TestEachTrackerWideSettingMustAgree(t *testing.T) {
	up := newUpstream(t)
	const secretA, secretB = "first-secret-0123456789", "second-secret-0123456789"
	cases := []struct {
		setting            string
		options1, options2 string
		shown1, shown2     string // the two values the error shows
	}{
		{"status_access", "\t\tstatus_access token", "\t\tstatus_access id", "token", "id"},
		{"client_ids", "\t\tclient_ids off", "\t\tclient_ids on", "off", "on"},
		{"token_secret", "\t\tstatus_access token\n\t\ttoken_secret " + secretA, "\t\tstatus_access token\n\t\ttoken_secret " + secretB,
			"(a configured secret)", "(a different configured secret)"},
		{"token_secret", "\t\tstatus_access token\n\t\ttoken_secret " + secretA, "\t\tstatus_access token",
			"(a configured secret)", "(the generated one)"},
		{"retain", "\t\tretain 1m", "", "1m0s", "5m0s"},
		{"max_uploads", "\t\tmax_uploads 50", "", "50", "100000"},
		{"max_memory", "\t\tmax_memory 1MiB", "", "1048576", "67108864"},
		{"max_reservations", "\t\tmax_reservations 5", "", "5", "10000"},
		{"max_group_uploads", "\t\tmax_group_uploads 5", "", "5", "1000"},
		{"max_subscribers", "\t\tmax_subscribers 5", "", "5", "10000"},
		{"max_subscribers_per_upload", "\t\tmax_subscribers_per_upload 5", "", "5", "100"},
		{"rate_limit_total", "\t\trate_limit_total 1MiB", "", "1048576 bytes/s", "none"},
		{"burst", "\t\trate_limit_total 1MiB\n\t\tburst 64KiB", "\t\trate_limit_total 1MiB", "65536", "104857"},
	}
	for _, c := range cases {
		t.Run(c.setting, func(t *testing.T) {
			cfg, _, _ := twoSites(t, up.host, c.options1, c.options2)
			err := loadErr(t, cfg)
			if err == nil {
				_ = caddy.Stop()
				t.Fatalf("handlers with %q and %q on one tracker loaded", c.options1, c.options2)
			}
			msg := err.Error()
			one := fmt.Sprintf("one handler sets %s %s, another %s;", c.setting, c.shown1, c.shown2)
			other := fmt.Sprintf("one handler sets %s %s, another %s;", c.setting, c.shown2, c.shown1)
			if c.shown2 == "(a different configured secret)" { // which one is "different" depends on the order
				other = fmt.Sprintf("one handler sets %s %s, another %s;", c.setting, c.shown1, c.shown2)
			}
			if !strings.Contains(msg, `tracker "default": `) || !(strings.Contains(msg, one) || strings.Contains(msg, other)) ||
				!strings.Contains(msg, "must set the same "+c.setting) {
				t.Errorf("error %q; want %q (or the values the other way round)", msg, one)
			}
			if strings.Contains(msg, secretA) || strings.Contains(msg, secretB) {
				t.Errorf("error %q shows a secret", msg)
			}

			// on two trackers, the same settings load
			cfg, _, _ = twoSites(t, up.host, c.options1+"\n\t\ttracker first", c.options2+"\n\t\ttracker second")
			if err := loadErr(t, cfg); err != nil {
				t.Fatalf("the same settings on two trackers: %v", err)
			}
			_ = caddy.Stop()
		})
	}
}

// With redis, interval is the tracker's publisher's: two handlers with
// one redis must agree on it. Without redis it is each handler's own.
func TestIntervalIsTrackerWideWithRedis(t *testing.T) {
	rs := testredis.Start(t)
	up := newUpstream(t)
	cfg, _, _ := twoSites(t, up.host, "\t\tinterval 50ms", "")
	if err := loadErr(t, cfg); err != nil {
		t.Fatalf("two intervals without redis: %v", err)
	}
	_ = caddy.Stop()

	redis := "\n\t\tredis " + rs.URL()
	cfg, _, _ = twoSites(t, up.host, "\t\tinterval 50ms"+redis, redis)
	err := loadErr(t, cfg)
	if err == nil {
		_ = caddy.Stop()
		t.Fatal("two intervals with one redis loaded")
	}
	if msg := err.Error(); !strings.Contains(msg, "interval 50ms, another 100ms;") && !strings.Contains(msg, "interval 100ms, another 50ms;") {
		t.Errorf("error %q; want it to name interval, 50ms and 100ms", msg)
	}
}

// Sites that leave everything at its default, or set the same values,
// share the default tracker as before: an upload through one is read
// through the other.
func TestSitesWithTheSameSettingsShareTheDefaultTracker(t *testing.T) {
	up := newUpstream(t)
	for _, options := range []string{"", "\t\tretain 1m\n\t\tmax_memory 1MiB\n\t\tstatus_access token\n\t\tclient_ids off"} {
		cfg, site1, site2 := twoSites(t, up.host, options, options)
		testcaddy.Run(t, cfg)
		p1 := &proxy{base: site1, client: http.DefaultClient}
		p2 := &proxy{base: site2, client: http.DefaultClient}
		resp, _ := p1.upload(t, http.MethodPost, "/", strings.NewReader("shared tracker"), 14, nil)
		id := resp.Header.Get(DefaultIDHeader)
		if resp.StatusCode != http.StatusOK || id == "" {
			t.Fatalf("options %q: upload %d, ID %q", options, resp.StatusCode, id)
		}
		header := bearer(resp.Header.Get("X-Upload-Token")) // none with status_access id
		if r, body := p2.getWith(t, DefaultStatusPath+id, header); r.StatusCode != http.StatusOK || !strings.Contains(body, `"status":"complete"`) {
			t.Errorf("options %q: the upload through site 1, read through site 2: %d %s", options, r.StatusCode, body)
		}
		_ = caddy.Stop()
	}
}

// A reload may change a tracker-wide setting, on every handler: the
// old config's handlers are not compared with the new one's. Records
// are kept across it, and the new setting applies on both sites.
func TestReloadChangesATrackerWideSettingOnEveryHandler(t *testing.T) {
	up := newUpstream(t)
	private := "\t\tstatus_access token\n\t\tclient_ids off\n\t\tmax_memory 1MiB"
	cfg, site1, site2 := twoSites(t, up.host, private, private)
	testcaddy.Run(t, cfg)
	p1 := &proxy{base: site1, client: http.DefaultClient}
	p2 := &proxy{base: site2, client: http.DefaultClient}
	resp, _ := p1.upload(t, http.MethodPost, "/", strings.NewReader("before the reload"), 17, nil)
	id := resp.Header.Get(DefaultIDHeader)
	if resp.StatusCode != http.StatusOK || id == "" {
		t.Fatalf("upload: %d, ID %q", resp.StatusCode, id)
	}
	if r, _ := p2.getWith(t, DefaultStatusPath+id, nil); r.StatusCode != http.StatusNotFound {
		t.Fatalf("private: status without the token through site 2: %d, want 404", r.StatusCode)
	}

	public := "\t\tstatus_access id\n\t\tmax_memory 2MiB"
	cfg = testcaddy.GlobalOptions + siteBlock(site1, public, up.host) + siteBlock(site2, public, up.host)
	testcaddy.Load(t, cfg)
	for _, p := range []*proxy{p1, p2} {
		if r, body := p.getWith(t, DefaultStatusPath+id, nil); r.StatusCode != http.StatusOK || !strings.Contains(body, `"status":"complete"`) {
			t.Errorf("after the reload to status_access id: status through %s: %d %s", p.base, r.StatusCode, body)
		}
	}

	// and back, on one site only: refused, and the running config stays,
	// its max_memory included (both handlers of the refused config say
	// 1MiB, so whichever is provisioned first would have set it)
	cfg = testcaddy.GlobalOptions + siteBlock(site1, private, up.host) + siteBlock(site2, "\t\tstatus_access id\n\t\tmax_memory 1MiB", up.host)
	if err := loadErr(t, cfg); err == nil || !strings.Contains(err.Error(), "status_access") {
		t.Fatalf("a reload that makes one site private only: %v", err)
	}
	if r, _ := p2.getWith(t, DefaultStatusPath+id, nil); r.StatusCode != http.StatusOK {
		t.Errorf("after the refused reload: status through site 2: %d, want 200 (the running config)", r.StatusCode)
	}
	val, _, _ := trackers.LoadOrNew(DefaultTracker, nil)
	defer trackers.Delete(DefaultTracker)
	if got := val.(*tracker).memory.max.Load(); got != 2<<20 {
		t.Errorf("after the refused reload: the tracker's max_memory is %d, want the running config's %d", got, 2<<20)
	}
}
