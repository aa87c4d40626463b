package caddyprogress

import (
	"fmt"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// routeOff, as status_path, events_path or ws_path, turns that route
// off: its requests go on to the next handler, as for a site that only
// wants the nginx report (status_path off also turns reservations and
// group status off; events_path off, the event streams; ws_path off,
// the WebSockets).
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
	routes := h.progressRoutes()[:3]
	for _, route := range routes {
		if route.path == routeOff {
			continue
		}
		if !strings.HasPrefix(route.path, "/") {
			return fmt.Errorf("%s %q must start with / (or be off)", route.name, route.path)
		}
		if route.path == "/" {
			return fmt.Errorf("%s \"/\" would take every request of the site; use a prefix such as %s", route.name, route.example)
		}
		if h.NginxReportPath == route.path {
			return fmt.Errorf("nginx_report_path and %s are both %q", route.name, route.path)
		}
	}
	if h.NginxReportPath != "" && !strings.HasPrefix(h.NginxReportPath, "/") {
		return fmt.Errorf("nginx_report_path %q must start with /", h.NginxReportPath)
	}
	for i, a := range routes {
		for _, b := range routes[i+1:] {
			if err := overlap(a.name, a.path, b.name, b.path); err != nil {
				return err
			}
		}
	}
	return nil
}

// progressRoute is one of the handler's own routes, by its directive.
type progressRoute struct {
	name, path string
	example    string // its default, for error messages
}

// progressRoutes are the handler's routes that another path (a route,
// the resumable endpoint) must not overlap: the status, events and
// WebSocket routes, then the nginx report ("" or off when not served).
func (h *Handler) progressRoutes() []progressRoute {
	nginx := h.NginxReportPath
	if nginx == "" {
		nginx = routeOff
	}
	return []progressRoute{
		{"status_path", h.StatusPath, DefaultStatusPath},
		{"events_path", h.EventsPath, DefaultEventsPath},
		{"ws_path", h.WSPath, DefaultWSPath},
		{"nginx_report_path", nginx, "/progress"},
	}
}

// overlap refuses two routes (both on) of which one would take the
// other's requests.
func overlap(nameA, a, nameB, b string) error {
	if a == routeOff || b == routeOff {
		return nil
	}
	if a == b {
		return fmt.Errorf("%s and %s are both %q", nameA, nameB, a)
	}
	if strings.HasPrefix(b, a) {
		return fmt.Errorf("%s %q is a prefix of %s %q: the two overlap, and it would take that route's requests", nameA, a, nameB, b)
	}
	if strings.HasPrefix(a, b) {
		return fmt.Errorf("%s %q is a prefix of %s %q: the two overlap, and it would take that route's requests", nameB, b, nameA, a)
	}
	return nil
}
