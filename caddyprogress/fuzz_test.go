package caddyprogress

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/ratelog"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
)

// Fuzz targets (FuzzMultipartObserver is in multipart_test.go). Their
// seed corpora are in testdata/fuzz/<target>; scripts/fuzz.sh runs each
// for a while.

// FuzzCaddyfile: any input to the directive either parses or gives an
// error, never panics; what parses and validates survives a JSON round
// trip unchanged.
func FuzzCaddyfile(f *testing.F) {
	f.Add("upload_progress")
	f.Add("upload_progress {\n\ttracker uploads\n\tmethods POST put\n\tinterval 250ms\n\tretain 10m\n}")
	f.Add("upload_progress {\n\tmax_uploads 500\n\trate_limit 1MiB\n\trate_limit_total 500KB\n\tburst 64KiB\n}")
	f.Add("upload_progress {\n\tnginx_report_path /progress\n\tstatus_path /s/\n\tevents_path /e/\n\twait 30s\n}")
	f.Add("upload_progress {\n\trate_limit -1\n\tburst 1EiB\n\tmax_uploads 99999999999999999999\n}")
	f.Add("upload_progress {\n\tid_header\n\tinterval\n}")
	f.Fuzz(func(t *testing.T, input string) {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
			return
		}
		h.setDefaults()
		if err := h.Validate(); err != nil {
			return
		}
		encoded, err := json.Marshal(h)
		if err != nil {
			t.Fatalf("marshalling %+v: %v", h, err)
		}
		var back Handler
		if err := json.Unmarshal(encoded, &back); err != nil {
			t.Fatalf("unmarshalling %s: %v", encoded, err)
		}
		if !reflect.DeepEqual(exportedFields(h), exportedFields(back)) {
			t.Fatalf("JSON round trip changed the config:\n%+v\n%+v", h, back)
		}
	})
}

// exportedFields is the handler's configuration, without what Provision
// sets.
func exportedFields(h Handler) Handler {
	return Handler{Tracker: h.Tracker, Methods: h.Methods, IDHeader: h.IDHeader, IDQuery: h.IDQuery,
		StatusPath: h.StatusPath, EventsPath: h.EventsPath, Interval: h.Interval, Retain: h.Retain,
		Wait: h.Wait, MaxUploads: h.MaxUploads, RateLimit: h.RateLimit, RateLimitTotal: h.RateLimitTotal,
		Burst: h.Burst, NginxReportPath: h.NginxReportPath}
}

// idRefusal matches every message of validateID: none echoes the ID.
var idRefusal = regexp.MustCompile(`^upload ID (is empty|is \d+ characters long; at most 128 are allowed|has a character that is not allowed at position \d+ \(allowed: A-Z a-z 0-9 \. _ ~ : -\))$`)

// FuzzValidateID: an ID (or group ID) is accepted exactly when it is 1
// to 128 characters of A-Z a-z 0-9 . _ ~ : -, the same in a header and
// in the X-Upload-Group header; a refusal's message never echoes it.
func FuzzValidateID(f *testing.F) {
	for _, id := range []string{"a", "my-upload-1", "x.y_z~1:2", strings.Repeat("a", 128), strings.Repeat("a", 129), "", "a b", "a/../b", "%2e%2e", "\x00", "é", "<script>"} {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := validateID(id)
		want := len(id) >= 1 && len(id) <= progress.MaxIDLength
		for i := 0; i < len(id); i++ {
			c := id[i]
			want = want && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._~:-", c) >= 0)
		}
		if (err == nil) != want {
			t.Fatalf("validateID(%q) = %v, want valid=%v", id, err, want)
		}
		if err != nil && !idRefusal.MatchString(err.Error()) {
			t.Fatalf("the refusal of %q is %q, not one of the fixed messages", id, err)
		}
		r := &http.Request{Header: http.Header{groupKey: {id}}}
		group, gerr := uploadGroup(r)
		if (gerr == nil) != want || (gerr == nil && group != id) {
			t.Fatalf("uploadGroup(%q) = %q, %v; want valid=%v", id, group, gerr, want)
		}
	})
}

// FuzzNginxReport: whatever the query, the nginx report answers 200 with
// JSON or JSONP whose callback is a plain JavaScript name, or a 400 with
// a JSON error; it never reflects anything else.
func FuzzNginxReport(f *testing.F) {
	for _, q := range []string{"X-Progress-ID=up-1", "X-Progress-ID=up-1&callback=cb", "x-progress-id=up-1&callback=a.b$c_1",
		"X-Progress-ID=up-1&callback=alert(1)//", "X-Progress-ID=%zz", "callback=cb", "X-Progress-ID=up-1&callback=", "X-PROGRESS-ID=a&X-Progress-ID=b",
		"X-Progress-ID=up-1&callback=%3Cscript%3E", "X-Progress-ID=up-1&callback=" + strings.Repeat("a", 65)} {
		f.Add(q, "")
	}
	f.Add("", "up-1")
	f.Add("callback=cb", "bad id")
	h := &Handler{NginxReportPath: "/progress", logger: zap.NewNop(), tracker: newTracker("fuzz"), refusalLog: new(ratelog.Gate)}
	h.uploads = h.newUploadStore()
	f.Cleanup(func() { h.tracker.Destruct() })
	u, err := h.tracker.start("up-1", 100, 0, 10)
	if err != nil {
		f.Fatal(err)
	}
	u.addReceived(40)
	f.Fuzz(func(t *testing.T, rawQuery, header string) {
		req := httptest.NewRequest(http.MethodGet, "/progress", nil)
		req.URL.RawQuery = rawQuery
		if header != "" {
			if !validHeaderValue(header) {
				return
			}
			req.Header.Set(progressIDHeader, header)
		}
		rec := httptest.NewRecorder()
		if err := h.serveNginxReport(rec, req); err != nil {
			t.Fatalf("serveNginxReport: %v", err)
		}
		body := rec.Body.String()
		switch rec.Code {
		case http.StatusOK:
			report := strings.TrimSuffix(body, "\r\n")
			if callback := req.URL.Query().Get(nginxCallbackParam); req.URL.Query().Has(nginxCallbackParam) {
				if !nginxCallbackName.MatchString(callback) || !strings.HasPrefix(report, callback+"(") || !strings.HasSuffix(report, ");") {
					t.Fatalf("JSONP %q for callback %q", body, callback)
				}
				report = strings.TrimSuffix(strings.TrimPrefix(report, callback+"("), ");")
			}
			var v map[string]any
			if err := json.Unmarshal([]byte(report), &v); err != nil || v["state"] == nil {
				t.Fatalf("report %q is not the nginx JSON: %v", body, err)
			}
		case http.StatusBadRequest:
			var e map[string]string
			if err := json.Unmarshal([]byte(body), &e); err != nil || e["error"] == "" {
				t.Fatalf("refusal %q is not a JSON error", body)
			}
		default:
			t.Fatalf("answered %d %q", rec.Code, body)
		}
		if !utf8.ValidString(body) && rec.Code == http.StatusOK {
			t.Fatalf("report %q is not UTF-8", body)
		}
	})
}

// validHeaderValue reports whether Go's client could send v as a header
// value (no control characters but tab).
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// FuzzStatusRoundTrip: the status JSON of any upload, at any point of
// its life, decodes back to the same Status.
func FuzzStatusRoundTrip(f *testing.F) {
	f.Add("up-1", int64(100), int64(40), int64(2_000_000_000), uint8(progress.StateUploading), 0, "", int64(0), "")
	f.Add("up-2", int64(-1), int64(7), int64(1), uint8(progress.StateComplete), 200, "", int64(1<<20), "")
	f.Add("up-3", int64(0), int64(0), int64(0), uint8(progress.StateError), 502, phraseUpstreamUnreachable, int64(0), "")
	f.Add("up-4", int64(10), int64(20), int64(5), uint8(progress.StateAborted), 0, phraseClientGone, int64(0), "field\xff")
	f.Add("up-5", int64(1)<<62, int64(1)<<62, int64(1)<<40, uint8(progress.StateProcessing), 0, "", int64(0), "")
	tr := newTracker("fuzz-status")
	f.Cleanup(func() { tr.Destruct() })
	f.Fuzz(func(t *testing.T, id string, total, received, elapsedNanos int64, st uint8, code int, phrase string, rateLimit int64, partName string) {
		if validateID(id) != nil || received < 0 || elapsedNanos < 0 || st > uint8(progress.StateAborted) || !utf8.ValidString(phrase) {
			return
		}
		started := time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)
		u := newUpload(id, max(total, -1), started, progress.StateUploading)
		u.rateLimit = max(rateLimit, 0)
		if partName != "" {
			parts := newPartList(tr)
			if _, err := parts.add(cleanName(partName), nil); err != nil {
				return
			}
			u.parts.Store(parts)
		}
		u.received.Store(received)
		u.lastRead.Store(elapsedNanos / 2)
		now := started.Add(time.Duration(elapsedNanos))
		switch s := state(st); {
		case s == progress.StatePending:
			u.state.Store(int32(progress.StatePending))
		case s == progress.StateProcessing:
			u.markBodyEnded(max(elapsedNanos/2, 1))
		case s.Final():
			u.finish(s, code, phrase, now)
		}
		want := u.snapshot(now)
		encoded, err := json.Marshal(want)
		if err != nil {
			t.Fatalf("marshalling %+v: %v", want, err)
		}
		var got Status
		if err := json.Unmarshal(encoded, &got); err != nil {
			t.Fatalf("unmarshalling %s: %v", encoded, err)
		}
		if !reflect.DeepEqual(normalized(want), normalized(got)) {
			t.Fatalf("round trip changed the status:\n%+v\n%+v\n%s", want, got, encoded)
		}
	})
}

// normalized makes two Status values comparable with DeepEqual: times
// in UTC without a monotonic reading, no files slice for none.
func normalized(s Status) Status {
	s.StartedAt = s.StartedAt.UTC().Round(0)
	s.UpdatedAt = s.UpdatedAt.UTC().Round(0)
	if s.FinishedAt != nil {
		at := s.FinishedAt.UTC().Round(0)
		s.FinishedAt = &at
	}
	if len(s.Files) == 0 {
		s.Files = nil
	}
	return s
}
