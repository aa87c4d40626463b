package caddyprogress

import (
	"context"
	"net/http"
	"net/http/httptest"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// orderCheck warns, once the config runs, about the directive order
// trap: in a Caddyfile, handle (and route, handle_path) blocks run
// before upload_progress, so a block that takes the upload routes'
// requests leaves the handler at the site's top level without them:
//
//	:8080 {
//		upload_progress            # never sees /upload*
//		handle /upload* {
//			reverse_proxy localhost:9000
//		}
//	}
//
// Caddy gives a handler no view of its sibling routes while it is
// provisioned, so the check runs on Caddy's started event: it finds the
// route list that holds this handler, and asks whether an earlier route
// with a block of routes (a subroute) matches a request to the status
// route (or the events route). Such a block may answer the request
// itself, so the warning says "may".
type orderCheck struct {
	h   *Handler
	ctx caddy.Context
}

func (o orderCheck) Handle(context.Context, caddy.Event) error {
	app, err := o.ctx.App("http")
	if err != nil {
		return nil // no http app: nothing to check
	}
	probePath := o.h.StatusPath
	if probePath == routeOff {
		probePath = o.h.EventsPath
	}
	if probePath == routeOff {
		return nil
	}
	probePath += "probe"
	for name, srv := range app.(*caddyhttp.App).Servers {
		probe := httptest.NewRequest(http.MethodGet, probePath, nil)
		probe = caddyhttp.PrepareRequest(probe, caddy.NewReplacer(), httptest.NewRecorder(), srv)
		if found, taken := o.earlierBlockTakes(srv.Routes, probe); found && taken {
			o.h.logger.Warn("a handle or route block before upload_progress may take its requests, so uploads would go untracked and the progress routes to the next handler: "+
				"put upload_progress inside that block, or order it first with the global option 'order upload_progress before handle'",
				zap.String("server", name),
				zap.String("request", "GET "+probePath))
		}
	}
	return nil
}

// earlierBlockTakes looks for the handler in routes and the subroutes
// in them. found says it is there; taken, that a route before it in the
// same list is a block of routes whose matchers match probe.
func (o orderCheck) earlierBlockTakes(routes caddyhttp.RouteList, probe *http.Request) (found, taken bool) {
	for i, route := range routes {
		for _, handler := range route.Handlers {
			if handler == caddyhttp.MiddlewareHandler(o.h) {
				return true, blockMatches(routes[:i], probe)
			}
			if sub, ok := handler.(*caddyhttp.Subroute); ok {
				if found, taken := o.earlierBlockTakes(sub.Routes, probe); found {
					return true, taken
				}
			}
		}
	}
	return false, false
}

// blockMatches reports whether one of routes is a block of routes (a
// subroute, as handle and route make) whose matchers match probe.
func blockMatches(routes caddyhttp.RouteList, probe *http.Request) bool {
	for _, route := range routes {
		for _, handler := range route.Handlers {
			if _, ok := handler.(*caddyhttp.Subroute); !ok {
				continue
			}
			if len(route.MatcherSets) == 0 {
				return true
			}
			if match, err := route.MatcherSets.AnyMatchWithError(probe); err == nil && match {
				return true
			}
		}
	}
	return false
}

// Interface guard
var _ caddyevents.Handler = orderCheck{}
