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
	s.addCORS(w, r)
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
// backend took it); of a failed one, 410 Gone. An empty PATCH at the
// upload's length gets the backend's answer again (without Set-Cookie),
// for a creator that lost it: only a request that proves it is the
// creator's (ownsUpload). A PATCH with bytes, or at another offset, is
// refused: its bytes were not stored (409, or 410 once failed). DELETE
// removes what is left.
func (s *Server) serveEnded(w http.ResponseWriter, r *http.Request, rec *deliveryRecord) error {
	s.addCORS(w, r)
	h := w.Header()
	h.Set("Tus-Resumable", "1.0.0")
	h.Set("Cache-Control", "no-store")
	size := strconv.FormatInt(rec.Size, 10)
	switch r.Method {
	case http.MethodHead:
		if rec.Delivery == deliveryFailed {
			w.WriteHeader(http.StatusGone)
			return nil
		}
		h.Set("Upload-Offset", size)
		h.Set("Upload-Length", size)
		w.WriteHeader(http.StatusOK)
		return nil
	case http.MethodPatch:
		if r.Header.Get("Upload-Offset") != size || r.ContentLength != 0 {
			if rec.Delivery == deliveryFailed {
				return s.refuse(w, r, http.StatusGone, errors.New("this upload has ended; these bytes were not stored"))
			}
			return s.refuse(w, r, http.StatusConflict, errors.New("this upload is complete; these bytes were not stored"))
		}
		if rec.Answer == nil {
			return s.refuse(w, r, http.StatusGone, errors.New("this upload has ended"))
		}
		if !s.ownsUpload(r, rec) {
			return s.refuse(w, r, http.StatusForbidden, errors.New(
				"the backend's answer is given again only to a request with the upload's token or its creation's credentials"))
		}
		h.Set("Upload-Offset", size)
		rec.Answer.withoutCookies().writeTo(w)
		return nil
	case http.MethodDelete:
		if err := removeUpload(s.spool.store, rec.ID); err != nil {
			s.logger.Error("removing an ended upload", zap.String("id", rec.ID), zap.Error(err))
		}
		s.spool.forget(rec.ID)
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	h.Set("Allow", "HEAD, PATCH, DELETE")
	return s.refuse(w, r, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed for an upload", r.Method))
}

// ownsUpload reports whether r proves it is from the upload's creator:
// it shows the upload's token, or one of the creation's credential
// headers (Authorization, Cookie) with the same values.
func (s *Server) ownsUpload(r *http.Request, rec *deliveryRecord) bool {
	return s.opts.Tracker.ShowsToken(r, rec.ID) || rec.Owner.proves(r)
}
