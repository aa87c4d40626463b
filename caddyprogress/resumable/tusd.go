package resumable

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tus/tusd/v2/pkg/handler"
	"go.uber.org/zap"
)

// newTusd makes the tusd handler: the spool's store and locks,
// no downloads (uploads are for the backend) and no concatenation (its
// Upload-Concat header names uploads by URL, which would need the same
// checks as IDs), CORS as cors_origins says (cors.go). tusd's logs go to the handler's
// logger from warnings up (log.go).
func (s *Server) newTusd() error {
	composer := handler.NewStoreComposer()
	s.spool.store.UseIn(composer)
	s.data = composer.Core
	// A request for an upload that another holds (a client resuming
	// before the proxy noticed its old connection is gone, here or on
	// another instance) asks the holder to let go (coordinator.go).
	// A request asked to let go is answered 423, not tusd's 400
	// (interrupted.go).
	composer.UseLocker(releaseMarkingLocker{s.spool.coord.Locker()})

	s.cors = s.cfg.corsConfig(s.opts.IDHeader)
	h, err := handler.NewHandler(handler.Config{
		BasePath:                   s.cfg.Path,
		StoreComposer:              composer,
		MaxSize:                    s.cfg.MaxSize,
		EnableExperimentalProtocol: s.cfg.IETFDraft,
		DisableDownload:            true,
		DisableConcatenation:       true,
		Cors:                       s.cors,
		Logger:                     newSlogLogger(s.logger),
		PreUploadCreateCallback:    s.beforeCreate,
		PreFinishResponseCallback:  s.beforeFinishResponse,
		PreUploadTerminateCallback: s.beforeTerminate,
	})
	if err != nil {
		return fmt.Errorf("setting up tusd: %w", err)
	}
	s.tusd = http.StripPrefix(s.cfg.Path[:len(s.cfg.Path)-1], h)
	return nil
}

// stateOf returns the requestState of the request a tusd callback runs
// for.
func stateOf(ev handler.HookEvent) (*requestState, error) {
	st, ok := ev.Context.Value(stateKey{}).(*requestState)
	if !ok {
		return nil, errors.New("tusd callback outside a request served by this package")
	}
	return st, nil
}

// beforeCreate runs when tusd is about to create an upload: it checks
// the metadata, the size and the disk, picks the ID, writes the upload's
// record and starts tracking it.
func (s *Server) beforeCreate(ev handler.HookEvent) (handler.HTTPResponse, handler.FileInfoChanges, error) {
	var none handler.FileInfoChanges
	st, err := stateOf(ev)
	if err != nil {
		return handler.HTTPResponse{}, none, err
	}
	info := ev.Upload
	meta, err := checkMetadata(st.r.Header.Get("Upload-Metadata"), info.MetaData)
	if err != nil {
		return handler.HTTPResponse{}, none, jsonError("ERR_INVALID_METADATA", http.StatusBadRequest, err.Error())
	}
	info.MetaData = meta
	if !info.SizeIsDeferred && info.Size > s.cfg.MaxSize {
		return handler.HTTPResponse{}, none, jsonError("ERR_MAX_SIZE_EXCEEDED", http.StatusRequestEntityTooLarge,
			fmt.Sprintf("the upload is larger than the %d bytes allowed (max_size)", s.cfg.MaxSize))
	}
	id := newID()
	reserve := info.Size
	if info.SizeIsDeferred {
		reserve = max(st.r.ContentLength, 0)
	}
	if err := s.spool.reserve(id, reserve, s.cfg.MaxDisk); err != nil {
		return handler.HTTPResponse{}, none, storeFull()
	}

	rec := newRecord(id, st.group, st.r)
	if err := rec.write(s.spool.store); err != nil {
		s.spool.forget(id)
		s.logger.Error("creating an upload", zap.Error(err))
		return handler.HTTPResponse{}, none, jsonError("ERR_INTERNAL", http.StatusInternalServerError, "the upload could not be stored")
	}
	e := s.spool.entry(rec)
	e.requests.Add(1)
	e.heldSince.Store(time.Now().UnixNano())
	st.entry, st.sending = e, true
	tracked := s.trackInfo(e, rec, &info, false)
	tracked.Uploading()
	tracked.Announce(st.w)
	s.limitBody(st.r, id, 0) // st.r.Body is the creation request's own
	tracked.CountBody(st.r)
	st.body.ReadCloser = st.r.Body
	e.setExpiry(rec.Created.Add(s.cfg.expire()))

	resp := handler.HTTPResponse{Header: handler.HTTPHeader{s.opts.IDHeader: id}}
	return resp, handler.FileInfoChanges{ID: id, MetaData: meta}, nil
}

// beforeFinishResponse runs once the last byte is stored, before the
// request that carried it is answered: it delivers the upload, and the
// backend's answer becomes that request's (see deliver.go).
func (s *Server) beforeFinishResponse(ev handler.HookEvent) (handler.HTTPResponse, error) {
	st, err := stateOf(ev)
	if err != nil {
		return handler.HTTPResponse{}, err
	}
	return s.deliverNow(st, ev.Upload)
}

// beforeTerminate refuses to terminate an upload whose delivery has
// begun; it runs under tusd's lock of the upload.
func (s *Server) beforeTerminate(ev handler.HookEvent) (handler.HTTPResponse, error) {
	rec, err := readRecord(s.spool.store, ev.Upload.ID)
	if err == nil && rec.Delivery != deliveryReceiving {
		return handler.HTTPResponse{}, jsonError("ERR_UPLOAD_DELIVERING", http.StatusLocked,
			"the upload is being delivered to the backend and cannot be terminated")
	}
	return handler.HTTPResponse{}, nil
}

// jsonError is a tusd error answered as {"error": "..."}.
func jsonError(code string, status int, msg string) handler.Error {
	body, _ := jsonBody(map[string]string{"error": msg})
	return handler.Error{
		ErrorCode: code,
		Message:   msg,
		HTTPResponse: handler.HTTPResponse{
			StatusCode: status,
			Body:       body,
			Header:     handler.HTTPHeader{"Content-Type": "application/json", "Cache-Control": "no-store"},
		},
	}
}

// tusdWriter is the ResponseWriter tusd answers through. It adds the tus
// expiration extension ("expiration" in Tus-Extension, Upload-Expires on
// the answers to creation and PATCH requests of an upload still
// receiving bytes), and replaces the body of tusd's 500s, which carry Go
// errors with file paths (tusd logs them, log.go).
type tusdWriter struct {
	http.ResponseWriter
	s      *Server
	r      *http.Request
	st     *requestState
	hidden bool // the body is replaced
}

func (w *tusdWriter) WriteHeader(code int) {
	w.st.code = code
	if w.mayHaveWaited(code) && w.answerEnded() {
		return
	}
	if w.answerInterrupted(code) {
		return
	}
	if code == http.StatusInternalServerError && !w.hidden && !w.st.answered {
		h := w.Header()
		h.Del("Content-Length")
		h.Set("Content-Type", "application/json")
		w.hidden = true
		w.ResponseWriter.WriteHeader(code)
		if w.r.Method != http.MethodHead {
			_, _ = io.WriteString(w.ResponseWriter, `{"error":"the upload could not be stored; try again later"}`+"\n")
		}
		return
	}
	if code >= 200 && code < 300 {
		h := w.Header()
		if ext := h.Get("Tus-Extension"); ext != "" {
			h.Set("Tus-Extension", ext+",expiration")
		}
		if e := w.st.entry; e != nil && e.deliveryState() == deliveryReceiving && h.Get("Tus-Resumable") != "" &&
			(w.r.Method == http.MethodPost || w.r.Method == http.MethodPatch) {
			h.Set("Upload-Expires", time.Now().Add(w.s.cfg.expire()).UTC().Format(http.TimeFormat))
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

// mayHaveWaited reports whether tusd's answer code to a HEAD or PATCH of
// an upload could come from a state the request waited out on tusd's
// lock: another request stored the last byte meanwhile, and tusd finds
// the files gone (404, delivered), or complete (offset = length, while
// the delivery waits to retry), which a tus client takes for success.
func (w *tusdWriter) mayHaveWaited(code int) bool {
	if w.hidden || w.st.answered || w.st.entry == nil || (w.r.Method != http.MethodHead && w.r.Method != http.MethodPatch) {
		return false
	}
	return code == http.StatusNotFound || (code >= 200 && code < 300)
}

// answerEnded answers a request that waited for tusd's lock (see
// mayHaveWaited) from the upload's record instead (serveDelivering,
// serveEnded), if the record says the upload is past receiving; then
// tusd's own body is dropped.
func (w *tusdWriter) answerEnded() bool {
	rec, err := readRecord(w.s.spool.store, w.st.entry.id)
	if err != nil || rec.Delivery == deliveryReceiving {
		return false
	}
	w.hidden = true
	h := w.Header()
	h.Del("Content-Length")
	h.Del("Content-Type")
	if rec.Delivery == deliveryDelivering {
		_ = w.s.serveDelivering(w.ResponseWriter, w.r, w.st.entry)
	} else {
		_ = w.s.serveEnded(w.ResponseWriter, w.r, rec)
	}
	return true
}

// Write drops tusd's own body of a 500, or of a 404 answered by answerEnded.
func (w *tusdWriter) Write(p []byte) (int, error) {
	if w.hidden {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets tusd's http.ResponseController reach Caddy's writer.
func (w *tusdWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
