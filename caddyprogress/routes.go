package caddyprogress

import (
	"fmt"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// routeOff, as status_path or events_path, turns that route off: its
// requests go on to the next handler, as for a site that only wants the
// nginx report (status_path off also turns reservations and group
// status off; events_path off, the event streams).
//
//	upload_progress {
//		status_path off
//		events_path off
//		nginx_report_path /progress
//	}
const routeOff = "off"

// validateRoutes refuses routes that would swallow each other's
// requests, and an id_header that is not a header field name.
func (h *Handler) validateRoutes() error {
	if !httpguts.ValidHeaderFieldName(h.IDHeader) {
		return fmt.Errorf("id_header %q is not a valid header field name", h.IDHeader)
	}
	routes := []struct{ name, path string }{
		{"status_path", h.StatusPath},
		{"events_path", h.EventsPath},
	}
	for _, route := range routes {
		if route.path == routeOff {
			continue
		}
		if !strings.HasPrefix(route.path, "/") {
			return fmt.Errorf("%s %q must start with / (or be off)", route.name, route.path)
		}
		if route.path == "/" {
			return fmt.Errorf("%s / would take every request of the site; use a prefix such as /upload/status/", route.name)
		}
		if h.NginxReportPath == route.path {
			return fmt.Errorf("nginx_report_path and %s are both %q", route.name, route.path)
		}
	}
	if h.NginxReportPath != "" && !strings.HasPrefix(h.NginxReportPath, "/") {
		return fmt.Errorf("nginx_report_path %q must start with /", h.NginxReportPath)
	}
	status, events := h.StatusPath, h.EventsPath
	if status == routeOff || events == routeOff {
		return nil
	}
	if status == events {
		return fmt.Errorf("status_path and events_path are both %q", status)
	}
	if strings.HasPrefix(events, status) {
		return fmt.Errorf("status_path %q is a prefix of events_path %q: the status route would take the event streams", status, events)
	}
	if strings.HasPrefix(status, events) {
		return fmt.Errorf("events_path %q is a prefix of status_path %q: the events route would take the status requests", events, status)
	}
	return nil
}
