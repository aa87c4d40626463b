package caddyprogress

import (
	"fmt"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// nginxCallbackParam is the query parameter that asks for JSONP, as in
// nginx's upload_progress_jsonp_parameter default.
const nginxCallbackParam = "callback"

// nginxCallbackName is what a JSONP callback name must look like. nginx
// reflects the parameter unescaped; this one never reflects anything a
// script could break out of.
var nginxCallbackName = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_$.]{0,63}$`)

// serveNginxReport answers GET <nginx_report_path> the way nginx's
// upload progress module answers its report_uploads location, byte for
// byte (the templates of upload_progress_json_output and
// upload_progress_jsonp_output):
//
//	{ "state" : "starting" }\r\n                               unknown ID, or only reserved
//	{ "state" : "uploading", "received" : N, "size" : N }\r\n  uploading or processing
//	{ "state" : "done" }\r\n                                   complete
//	{ "state" : "error", "status" : N }\r\n                    error (aborted: 400)
//
// The ID comes from the X-Progress-ID header or query parameter, names
// matched case-insensitively as nginx does. With a callback query
// parameter the answer is JSONP: <callback>(<json>);\r\n.
func (h *Handler) serveNginxReport(w http.ResponseWriter, r *http.Request) error {
	id, ok := nginxProgressID(r)
	q := progressRead{
		id:      id,
		methods: []string{http.MethodGet, http.MethodHead},
		usage:   fmt.Sprintf("GET %s?X-Progress-ID=<id> reads a progress report", h.NginxReportPath),
		idParam: progressIDHeader,
		// without the token, an upload is reported as unknown
		// ("starting"), with nothing looked up, here or through redis
		hidden: func() error { return h.writeNginxReport(w, r, record{}) },
	}
	if !ok {
		q.noID = fmt.Errorf("no upload ID: send it in the %s header or query parameter", progressIDHeader)
	}
	if ok, err := h.admit(w, r, q); !ok {
		return err
	}
	return h.writeNginxReport(w, r, h.uploads.lookup(r.Context(), id, true))
}

// writeNginxReport answers with the record's report, as JSON, or as
// JSONP with a callback query parameter.
func (h *Handler) writeNginxReport(w http.ResponseWriter, r *http.Request, rec record) error {
	contentType := "application/json"
	report := nginxReport(rec)
	query := r.URL.Query()
	if query.Has(nginxCallbackParam) {
		callback := query.Get(nginxCallbackParam)
		if !nginxCallbackName.MatchString(callback) {
			return h.writeError(w, r, http.StatusBadRequest,
				fmt.Errorf("JSONP callback name %q is not allowed (it must match %s)", callback, nginxCallbackName))
		}
		contentType = "application/javascript"
		report = callback + "(" + report + ");"
	}

	header := w.Header()
	header.Set("Content-Type", contentType)
	header.Set("Expires", "Thu, 01 Jan 1970 00:00:01 GMT")
	header.Set("Cache-Control", "no-cache")
	body := report + "\r\n"
	header.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	_, err := w.Write([]byte(body))
	return err
}

// nginxReport is the JSON nginx's module would give for the record,
// without the line end.
func nginxReport(rec record) string {
	st, received, size, upstream := rec.progress()
	switch {
	case st == progress.StatePending:
		return `{ "state" : "starting" }`
	case st.Final():
		return nginxFinalReport(st, upstream)
	}
	// uploading, processing, paused or delivering
	if size < 0 {
		size = received // chunked: nginx would say -1; report the bytes so far
	}
	if st == progress.StateProcessing || st == progress.StateDelivering {
		received = size
	}
	return fmt.Sprintf(`{ "state" : "uploading", "received" : %d, "size" : %d }`, received, size)
}

// nginxFinalReport is the report of an upload that ended in st, with
// the answer's status code upstream (0 for none).
func nginxFinalReport(st state, upstream int) string {
	if st == progress.StateComplete {
		return `{ "state" : "done" }`
	}
	return fmt.Sprintf(`{ "state" : "error", "status" : %d }`, nginxErrorStatus(st, upstream))
}

// nginxErrorStatus is the status nginx would report for a failed upload:
// the answer's status code, or 400 when the client went away mid-body
// (nginx's status for a body it could not read).
func nginxErrorStatus(st state, upstream int) int {
	if st == progress.StateAborted {
		return http.StatusBadRequest
	}
	if upstream >= http.StatusBadRequest {
		return upstream
	}
	return http.StatusInternalServerError
}

// nginxProgressID finds the upload ID as nginx's module does: the
// X-Progress-ID header (Go matches header names case-insensitively),
// else the first query parameter named X-Progress-ID in any case.
func nginxProgressID(r *http.Request) (string, bool) {
	if values := r.Header.Values(progressIDHeader); len(values) > 0 {
		return values[0], true
	}
	for pair := range strings.SplitSeq(r.URL.RawQuery, "&") {
		key, value, _ := strings.Cut(pair, "=")
		if key, err := url.QueryUnescape(key); err != nil || !strings.EqualFold(key, progressIDHeader) {
			continue
		}
		value, err := url.QueryUnescape(value)
		if err != nil {
			return pair, true // not valid as an ID either; validateID says why
		}
		return value, true
	}
	return "", false
}
