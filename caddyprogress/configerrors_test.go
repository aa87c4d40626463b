package caddyprogress

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// goInternals matches what a config error must not show a user: Go's
// parser errors, error chains of the standard library, type names.
var goInternals = regexp.MustCompile(`strconv\.|invalid syntax|parsing "|humanize|time: |\*[a-z]+\.[A-Z]|%!`)

// Every config error names the directive, the value and what is
// expected, in words, once (no "resumable: resumable …"), and without
// Go internals. Each case is a whole Caddyfile, adapted and provisioned
// (caddy.Validate) as `caddy run` would.
func TestConfigErrorsSayWhatIsExpected(t *testing.T) {
	cases := []struct {
		name, directives string
		want             []string // each must be in the error
	}{
		{"rate_limit not a size", "rate_limit lots", []string{"rate_limit", `"lots"`, "is not a size", "1MiB"}},
		{"burst not a size", "rate_limit 1MiB\n\t\tburst big", []string{"burst", `"big"`, "is not a size"}},
		{"interval not a duration", "interval soon", []string{"interval", `"soon"`, "is not a duration", "100ms"}},
		{"retain negative", "retain -5m", []string{"retain", `"-5m"`, "longer than zero"}},
		{"max_uploads not a number", "max_uploads many", []string{"max_uploads", `"many"`, "whole number"}},
		{"status_access", "status_access maybe", []string{"status_access", `"maybe"`, "id or token"}},
		{"client_ids", "client_ids maybe", []string{"client_ids", `"maybe"`, "on or off"}},
		{"events_path /", "events_path /", []string{"events_path", `"/"`, "every request", "/upload/events/"}},
		{"ws_path /", "ws_path /", []string{"ws_path", `"/"`, "every request", "/upload/ws/"}},
		{"status_path /", "status_path /", []string{"status_path", `"/"`, "every request", "/upload/status/"}},
		{"tracker name", "tracker a/b", []string{"tracker", `"a/b"`, "position 2", "allowed"}},
		{"unknown subdirective", "colour blue", []string{"colour", "upload_progress"}},
		{"resumable deliver_to missing", "resumable /files/ {\n\t\t\tmax_size 1GiB\n\t\t}", []string{"resumable", "deliver_to", "required"}},
		{"resumable max_size not a size", "resumable /files/ {\n\t\t\tdeliver_to /upload\n\t\t\tmax_size huge\n\t\t}", []string{"max_size", `"huge"`, "is not a size"}},
		{"resumable deliver_as", "resumable /files/ {\n\t\t\tdeliver_to /upload\n\t\t\tdeliver_as xml\n\t\t}", []string{"deliver_as", `"xml"`, "raw or multipart"}},
		{"resumable expire", "resumable /files/ {\n\t\t\tdeliver_to /upload\n\t\t\texpire never\n\t\t}", []string{"expire", `"never"`, "duration"}},
		{"resumable cors_origins with a path", "resumable /files/ {\n\t\t\tdeliver_to /upload\n\t\t\tcors_origins https://app.example.com/\n\t\t}",
			[]string{"cors_origins", `"https://app.example.com/"`, "is not an origin", "scheme://host[:port]"}},
		{"resumable cors_origins * among others", "resumable /files/ {\n\t\t\tdeliver_to /upload\n\t\t\tcors_origins https://a.example *\n\t\t}",
			[]string{"cors_origins", `"*"`, "must stand alone"}},
		{"resumable over the WebSocket route", "resumable /upload/ws/ {\n\t\t\tdeliver_to /upload\n\t\t}", []string{"resumable", "/upload/ws/", "ws_path"}},
		{"resumable over the status route", "resumable /upload/status/ {\n\t\t\tdeliver_to /upload\n\t\t}", []string{"resumable", "/upload/status/", "status_path"}},
	}
	adapter := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			config := ":0 {\n\tupload_progress {\n\t\t" + c.directives + "\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n"
			var err error
			if adapted, _, adaptErr := adapter.Adapt([]byte(config), nil); adaptErr != nil {
				err = adaptErr
			} else {
				var cfg caddy.Config
				if err = json.Unmarshal(adapted, &cfg); err != nil {
					t.Fatal(err)
				}
				err = caddy.Validate(&cfg)
			}
			if err == nil {
				t.Fatalf("the config loaded:\n%s", config)
			}
			msg := err.Error()
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("the error does not say %q: %s", w, msg)
				}
			}
			if m := goInternals.FindString(msg); m != "" {
				t.Errorf("the error shows Go internals (%q): %s", m, msg)
			}
			if strings.Contains(msg, "resumable: resumable") || strings.Contains(msg, "resumable resumable") {
				t.Errorf("the error repeats its directive: %s", msg)
			}
		})
	}
}

// A bad group ID is called a group ID, where it is sent, in every route:
// never "not a valid group ID: upload ID has a character…".
func TestBadGroupIDIsCalledAGroupID(t *testing.T) {
	for _, c := range []struct {
		where string
		err   error
	}{
		{"header", func() error {
			r := httptest.NewRequest(http.MethodPost, "/upload", nil)
			r.Header.Set(groupHeader, "a/b")
			_, err := uploadGroup(r)
			return err
		}()},
		{"validateGroupID", validateGroupID("a/b")},
	} {
		if c.err == nil || strings.Contains(c.err.Error(), "upload ID") || !strings.Contains(c.err.Error(), "group ID has a character that is not allowed at position 2") {
			t.Errorf("%s: %v", c.where, c.err)
		}
	}
}
