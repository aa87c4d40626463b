package caddyprogress

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestCaddyfileEverySubdirective(t *testing.T) {
	d := caddyfile.NewTestDispenser(`upload_progress {
		tracker     uploads
		methods     POST put
		id_header   X-My-ID
		id_query    upload
		status_path /progress/status/
		events_path /progress/events/
		ws_path     /progress/ws/
		ws_origins  app.example.com https://*.example.net
		interval    250ms
		retain      10m
		wait        30s
		max_uploads 500
		max_memory  4GiB
		max_group_uploads 50
		max_reservations  20
		max_subscribers   30
		max_subscribers_per_upload 3
		rate_limit       1MiB
		rate_limit_total 500KB
		burst            64KiB
		nginx_report_path /progress
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	want := Handler{
		Tracker:    "uploads",
		Methods:    []string{"POST", "put"},
		IDHeader:   "X-My-ID",
		IDQuery:    "upload",
		StatusPath: "/progress/status/",
		EventsPath: "/progress/events/",
		WSPath:     "/progress/ws/",
		WSOrigins:  []string{"app.example.com", "https://*.example.net"},
		Interval:   caddy.Duration(250 * time.Millisecond),
		Retain:     caddy.Duration(10 * time.Minute),
		Wait:       caddy.Duration(30 * time.Second),
		MaxUploads: 500,

		MaxMemory:       4 << 30,
		MaxGroupUploads: 50,
		MaxReservations: 20,

		MaxSubscribers:          30,
		MaxSubscribersPerUpload: 3,

		RateLimit:       1 << 20,
		RateLimitTotal:  500_000,
		Burst:           64 << 10,
		NginxReportPath: "/progress",
	}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("parsed %+v\nwant   %+v", h, want)
	}
	if err := h.Validate(); err != nil {
		t.Fatalf("validating: %v", err)
	}
}

func TestCaddyfileDefaults(t *testing.T) {
	var h Handler
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`upload_progress`)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(h, Handler{}) {
		t.Fatalf("bare directive parsed as %+v", h)
	}
	h.setDefaults()
	if h.Tracker != "default" || h.IDHeader != "X-Upload-ID" || h.IDQuery != "X-Progress-ID" ||
		h.StatusPath != "/upload/status/" || h.EventsPath != "/upload/events/" || h.WSPath != "/upload/ws/" ||
		time.Duration(h.Interval) != 100*time.Millisecond || time.Duration(h.Retain) != 5*time.Minute ||
		time.Duration(h.Wait) != time.Minute || h.MaxUploads != 100000 ||
		h.MaxGroupUploads != 1000 || h.MaxReservations != 10000 || h.MaxMemory != 64<<20 ||
		h.MaxSubscribers != 10000 || h.MaxSubscribersPerUpload != 100 ||
		!reflect.DeepEqual(h.Methods, []string{"POST", "PUT", "PATCH"}) {
		t.Fatalf("defaults: %+v", h)
	}
}

func TestCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct {
		input   string
		wantErr string
	}{
		{`upload_progress extra`, "wrong argument count"},
		{"upload_progress {\n bogus 1\n}", `unrecognized upload_progress subdirective "bogus"`},
		{"upload_progress {\n tracker\n}", "tracker: expected one argument"},
		{"upload_progress {\n tracker a b\n}", "tracker: expected one argument, got more"},
		{"upload_progress {\n methods\n}", "wrong argument count"},
		{"upload_progress {\n ws_origins\n}", "wrong argument count"},
		{"upload_progress {\n interval soon\n}", `interval: "soon" is not a duration`},
		{"upload_progress {\n retain 0s\n}", `retain: "0s" must be longer than zero`},
		{"upload_progress {\n wait -1s\n}", `wait: "-1s" must be longer than zero`},
		{"upload_progress {\n max_uploads many\n}", `max_uploads: "many" is not a whole number of at least 1`},
		{"upload_progress {\n max_uploads 0\n}", `max_uploads: "0" is not a whole number of at least 1`},
		{"upload_progress {\n max_memory 2PiB\n}", `max_memory: "2PiB" must be from 1 byte to 1PiB`},
		{"upload_progress {\n max_group_uploads 0\n}", `max_group_uploads: "0" is not a whole number of at least 1`},
		{"upload_progress {\n max_reservations x\n}", `max_reservations: "x" is not a whole number of at least 1`},
		{"upload_progress {\n status_path\n}", "status_path: expected one argument"},
		{"upload_progress {\n rate_limit fast\n}", `rate_limit: "fast" is not a size`},
		{"upload_progress {\n rate_limit_total 0\n}", `rate_limit_total: "0" must be from 1 byte to 2GiB`},
		{"upload_progress {\n burst 3GiB\n}", `burst: "3GiB" must be from 1 byte to 2GiB`},
		{"upload_progress {\n rate_limit\n}", "rate_limit: expected one argument"},
		{"upload_progress {\n nginx_report_path\n}", "nginx_report_path: expected one argument"},
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%q: error %v, want one containing %q", tc.input, err, tc.wantErr)
		}
	}
}

func TestValidateErrors(t *testing.T) {
	for _, tc := range []struct {
		h       Handler
		wantErr string
	}{
		{Handler{Tracker: "bad name"}, "tracker name"},
		{Handler{StatusPath: "status/"}, "status_path \"status/\" must start with /"},
		{Handler{EventsPath: "events/"}, "events_path \"events/\" must start with /"},
		{Handler{StatusPath: "/same/", EventsPath: "/same/"}, "both"},
		{Handler{IDHeader: "Bad Header"}, "id_header"},
		{Handler{Methods: []string{"GET /"}}, "not a valid HTTP method"},
		{Handler{Burst: 1 << 20}, "burst is set, but neither rate_limit nor rate_limit_total"},
		{Handler{RateLimit: -1}, "must not be negative"},
		{Handler{NginxReportPath: "progress"}, `nginx_report_path "progress" must start with /`},
		{Handler{MaxMemory: 1000}, "max_memory 1000 is too small"},
	} {
		tc.h.setDefaults()
		err := tc.h.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%+v: error %v, want one containing %q", tc.h, err, tc.wantErr)
		}
	}
}

// The directive is ordered before reverse_proxy without an order line,
// and the JSON field names match the subdirectives.
func TestCaddyfileAdaptsBeforeReverseProxy(t *testing.T) {
	input := ":8080 {\n\treverse_proxy localhost:9000\n\tupload_progress {\n\t\tmax_uploads 7\n\t\tinterval 1s\n\t}\n}\n"
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
	if err != nil {
		t.Fatal(err)
	}
	var config struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []map[string]any `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfg, &config); err != nil {
		t.Fatal(err)
	}
	handle := config.Apps.HTTP.Servers["srv0"].Routes[0].Handle
	if len(handle) != 2 || handle[0]["handler"] != "upload_progress" || handle[1]["handler"] != "reverse_proxy" {
		t.Fatalf("adapted handlers: %v", handle)
	}
	if handle[0]["max_uploads"] != 7.0 || handle[0]["interval"] != 1e9 {
		t.Fatalf("upload_progress JSON: %v", handle[0])
	}
}
