package caddyprogress

import (
	"net/http"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/httpjson"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// writeJSON answers with v as JSON, never cached.
var writeJSON = httpjson.Write

// writeError refuses a request with code and err, a sentence for the
// client, and logs it at most once a second.
//
// When the server has error routes (handle_errors), the refusal is
// returned as caddyhttp.Error, as request_body does, so they run with
// {err.status_code} and {err.message}. Otherwise the handler answers
// itself with a JSON body {"error": "..."}: Caddy would write an empty
// one.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, code int, err error) error {
	h.logRefusal(r, code, err)
	if hasErrorRoutes(r) {
		return caddyhttp.Error(code, err)
	}
	return writeJSON(w, code, map[string]string{"error": err.Error()})
}

// hasErrorRoutes reports whether the server that r came to has error
// routes (handle_errors).
func hasErrorRoutes(r *http.Request) bool {
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return ok && srv.Errors != nil && len(srv.Errors.Routes) > 0
}

// logRefusal logs a refused request, at most once a second, so that a
// client sending bad requests in a loop cannot flood the log.
func (h *Handler) logRefusal(r *http.Request, code int, err error) {
	if !h.refusalLog.Allow() {
		return
	}
	h.logger.Info("request refused (logged at most once a second)",
		zap.Int("status", code),
		zap.String("method", r.Method),
		zap.String("path", r.URL.Path), // not the query: it may hold a token
		zap.String("remote_ip", r.RemoteAddr),
		zap.Error(err))
}
