package resumable

import (
	"errors"
	"net/http"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/httpjson"

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
	s.addCORS(w, r)
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
var writeJSON = httpjson.Write
