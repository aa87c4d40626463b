package resumable

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"go.uber.org/zap"
)

// serveDelivering answers while every byte is in and the delivery runs
// or waits to retry: 423 Locked with Retry-After, for HEAD too. A tus
// client must not see offset = length (it would report success before
// the backend accepted the file); 423 is what tusd itself answers for
// an upload another request holds, and tus-js-client retries on it.
func (s *Server) serveDelivering(w http.ResponseWriter, r *http.Request, e *entry) error {
	w.Header().Set("Tus-Resumable", "1.0.0")
	w.Header().Set("Retry-After", e.retryAfter())
	w.Header().Set("Cache-Control", "no-store")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusLocked)
		return nil
	}
	return writeJSON(w, http.StatusLocked, map[string]string{
		"error": "every byte of this upload is stored and it is being delivered to the backend; ask again later",
	})
}

// serveEnded answers for an upload whose delivery ended. HEAD of a
// delivered upload says offset = length (it is complete, and the
// backend took it); of a failed one, 410 Gone. PATCH gets the
// backend's answer again, for a client that lost it. DELETE removes
// what is left.
func (s *Server) serveEnded(w http.ResponseWriter, r *http.Request, rec *record) error {
	h := w.Header()
	h.Set("Tus-Resumable", "1.0.0")
	h.Set("Cache-Control", "no-store")
	switch r.Method {
	case http.MethodHead:
		if rec.Delivery == deliveryFailed {
			w.WriteHeader(http.StatusGone)
			return nil
		}
		size := strconv.FormatInt(rec.Size, 10)
		h.Set("Upload-Offset", size)
		h.Set("Upload-Length", size)
		w.WriteHeader(http.StatusOK)
		return nil
	case http.MethodPatch:
		if rec.Answer == nil {
			return s.refuse(w, r, http.StatusGone, errors.New("this upload has ended"))
		}
		h.Set("Upload-Offset", strconv.FormatInt(rec.Size, 10))
		rec.Answer.writeTo(w)
		return nil
	case http.MethodDelete:
		if err := removeUpload(s.cfg.Dir, rec.ID); err != nil {
			s.logger.Error("removing an ended upload", zap.String("id", rec.ID), zap.Error(err))
		}
		s.spool.forget(rec.ID)
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	h.Set("Allow", "HEAD, PATCH, DELETE")
	return s.refuse(w, r, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed for an upload", r.Method))
}
