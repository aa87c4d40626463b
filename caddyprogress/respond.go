package caddyprogress

import (
	"encoding/json"
	"net/http"

	"go.uber.org/zap"
)

// writeJSON answers with v as JSON, never cached.
func writeJSON(w http.ResponseWriter, code int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, err = w.Write(append(body, '\n'))
	return err
}

// writeError answers a request the handler refuses with code and a JSON
// body {"error": "..."}, and logs it once. The error is not returned to
// Caddy, which would log it again and write a body of its own.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, code int, err error) error {
	h.logger.Info("request refused",
		zap.Int("status", code),
		zap.String("method", r.Method),
		zap.String("uri", r.RequestURI),
		zap.String("remote_ip", r.RemoteAddr),
		zap.Error(err))
	return writeJSON(w, code, map[string]string{"error": err.Error()})
}
