package caddyprogress

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// statusClientClosedRequest is what reverse_proxy writes when the client
// goes away before the upstream answers.
const statusClientClosedRequest = 499

// trackedVar is the request variable (caddyhttp.SetVar) that names the
// ID of an upload an upload_progress handler tracks, so that a later
// handler in the same route leaves it alone.
const trackedVar = "upload_progress.tracked"

// serveUpload tracks one upload on its way to the next handler. An
// upload that an earlier upload_progress handler of the same route
// tracks already (the README's stacked throttling example) passes
// through untouched in its ID and record; only this handler's rate
// limits apply to it as well, so the slowest limit wins.
func (h *Handler) serveUpload(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if id, tracked := caddyhttp.GetVar(r.Context(), trackedVar).(string); tracked {
		h.throttleOnly(r, id)
		return next.ServeHTTP(w, r)
	}
	id, group, err := h.acceptUpload(r)
	if err != nil {
		return h.writeError(w, r, http.StatusBadRequest, err)
	}
	u, err := h.begin(r.Context(), id, group, r.ContentLength, nil) // lifecycle.go
	switch {
	case errors.Is(err, errInFlight):
		return h.writeError(w, r, http.StatusConflict, fmt.Errorf("upload ID %q: %w", id, err))
	case errors.Is(err, errTrackerFull):
		h.throttleOnly(r, id)       // untracked, but still limited
		return next.ServeHTTP(w, r) // tracking never fails an upload
	}
	caddyhttp.SetVar(r.Context(), trackedVar, id)
	h.announceUpload(w, r, id, group)
	return h.proxyTracked(w, r, next, u)
}

// acceptUpload returns the ID (the client's, or a fresh one) and the
// group of the upload r starts, or why they are refused (a 400).
func (h *Handler) acceptUpload(r *http.Request) (id, group string, err error) {
	id, err = h.uploadID(r)
	id, err = h.screenClientID(r, id, err) // client_ids off, status_access token (access.go)
	if err != nil {
		return "", "", err
	}
	if id == "" {
		id = newID()
	}
	if h.access.on() {
		r.Header.Del(uploadTokenHeader) // ours: it never goes to the backend
	}
	group, err = h.screenGroup(r) // status_access token: only with its token (group.go)
	return id, group, err
}

// announceUpload gives the upload's ID to the backend and the client
// (id_header, and the {http.upload_progress.id} placeholder), and its
// tokens to the client with status_access token.
func (h *Handler) announceUpload(w http.ResponseWriter, r *http.Request, id, group string) {
	r.Header[h.idKey] = []string{id}
	w.Header()[h.idKey] = []string{id}
	h.setTokenHeaders(w, id, group) // status_access token (access.go)
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Set("http.upload_progress.id", id)
}

// proxyTracked passes r to next with its body counted into u, then ends
// u with the outcome: what the backend answered, how the body ended, and
// whether the client stayed (outcome.go).
func (h *Handler) proxyTracked(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, u *upload) error {
	var observed *presentClient
	var answer http.ResponseWriter = w
	if r.ProtoMajor == 1 {
		var ctx context.Context
		var stopObserving func()
		observed, ctx, stopObserving = clients.observe(r.Context(), u, requestConn(r.Context()))
		defer stopObserving()
		if observed != nil {
			r = r.WithContext(ctx) // ended by clientPresence when the client leaves
		}
		answer = &earlyAnswerCloser{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, upload: u}
	}

	body := &countingBody{ReadCloser: r.Body, upload: u, throttle: h.newThrottle(), ctx: r.Context()}
	body.multipart = h.observeMultipart(r, u) // nil unless multipart/form-data
	r.Body = body
	rec := caddyhttp.NewResponseRecorder(answer, nil, nil)

	finished := false
	defer func() {
		if !finished { // next panicked
			h.finish(u, progress.StateError, http.StatusInternalServerError, phraseInternal)
		}
	}()
	err := next.ServeHTTP(rec, r)
	finished = true

	e := ending{written: rec.Status(), handlerErr: err, readErr: body.err(), bodyEnded: u.currentState() != progress.StateUploading}
	if closer, ok := answer.(*earlyAnswerCloser); ok && err != nil {
		closer.closeIfUnfinished() // Caddy writes the error's answer on w
	}
	switch {
	case r.Context().Err() != nil, observed != nil && observed.gone.Load():
		e.clientGone = true
	case observed != nil && !e.bodyEnded && err == nil && e.written != 0:
		e.clientGone = observed.answerLost(answer)
	}
	h.end(u, e)
	return err
}

// end ends u with the outcome of e, logged (at debug level) unless
// complete.
func (h *Handler) end(u *upload, e ending) {
	st, code, phrase := outcome(e)
	h.finish(u, st, code, phrase)
	if st != progress.StateComplete {
		h.logger.Debug("upload ended",
			zap.String("id", u.id),
			zap.String("status", st.String()),
			zap.Int("upstream_status", code),
			zap.String("error", phrase),
			zap.NamedError("handler_error", e.handlerErr),
			zap.NamedError("read_error", e.readErr),
			zap.Bool("body_ended", e.bodyEnded),
			zap.Bool("client_gone", e.clientGone))
	}
}

// uploadID returns the client's upload ID: from the id_header header,
// the X-Progress-ID header or the id_query query parameter, in that
// order. It is "" when the client sent none, and an error when the one
// it sent is not valid.
func (h *Handler) uploadID(r *http.Request) (string, error) {
	for _, field := range [...]struct{ name, key string }{{h.IDHeader, h.idKey}, {progressIDHeader, progressIDKey}} {
		if values, ok := r.Header[field.key]; ok {
			return values[0], wrapIDError(field.name+" header", validateID(values[0]))
		}
	}
	if h.IDQuery != "" && r.URL.RawQuery != "" {
		if query := r.URL.Query(); query.Has(h.IDQuery) {
			id := query.Get(h.IDQuery)
			return id, wrapIDError(h.IDQuery+" query parameter", validateID(id))
		}
	}
	return "", nil
}

func wrapIDError(where string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", where, err)
}

func (h *Handler) retain() time.Duration { return time.Duration(h.Retain) }

// throttleOnly limits the body of an upload this handler does not track
// to its rate_limit and rate_limit_total, if it has any, through a
// counting body whose record nobody reads.
func (h *Handler) throttleOnly(r *http.Request, id string) {
	if t := h.newThrottle(); t != nil {
		r.Body = &countingBody{ReadCloser: r.Body, upload: newUpload(id, r.ContentLength, time.Now(), progress.StateUploading), throttle: t, ctx: r.Context()}
	}
}
