package resumable

import (
	"encoding/json"
	"errors"
	"net/http"

	"go.uber.org/zap"
)

// refuse answers a request with code and {"error": "..."}, logged at
// most once a second.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, code int, err error) error {
	if s.refusalLog.Allow() {
		s.logger.Info("resumable request refused",
			zap.Int("status", code),
			zap.String("method", r.Method),
			zap.String("uri", r.RequestURI),
			zap.String("remote_ip", r.RemoteAddr),
			zap.Error(err))
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(code)
		return nil
	}
	return writeJSON(w, code, map[string]string{"error": err.Error()})
}

func (s *Server) refuseDiskFull(w http.ResponseWriter, r *http.Request) error {
	return s.refuse(w, r, http.StatusInsufficientStorage,
		errors.New("the proxy's upload store is full (max_disk); try again later"))
}

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
