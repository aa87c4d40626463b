package caddyprogress

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/resumable"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/resumable/redislock"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/resumable/s3store"
)

// This file joins the handler to package resumable (resumable uploads
// through tusd, kept on disk and delivered to the next handler as one
// request): it provisions the resumable Server when the resumable block
// is set, and implements the resumable.Tracker the Server tracks its
// uploads through, so they show in the status and events routes, the
// nginx report, groups and metrics like any upload, and are throttled
// by rate_limit and rate_limit_total.
//
// A resumable upload's record lives across all its requests: uploading
// while a request sends bytes, paused between requests, delivering once
// every byte is stored, then complete, error or aborted. Its received
// counts every byte stored, and its status has a "resumable" object.

// provisionResumable starts the resumable Server, if configured.
func (h *Handler) provisionResumable(ctx caddy.Context) error {
	if h.Resumable == nil {
		return nil
	}
	cfg := *h.Resumable
	cfg.SetDefaults(h.Tracker)
	for _, route := range h.progressRoutes() {
		if err := overlap("resumable", cfg.Path, route.name, route.path); err != nil {
			return err
		}
	}
	srv, err := resumable.New(cfg, resumable.Options{
		Tracker:        resumableTracker{h},
		IDHeader:       h.IDHeader,
		Logger:         h.logger.Named("resumable"),
		Load:           ctx.GetMetricsRegistry(), // one per config load
		NewCoordinator: h.resumableCoordinator(),
		OpenS3:         s3store.Open,
	})
	if err != nil {
		return err
	}
	h.resumable = srv
	return nil
}

// resumableCoordinator makes the locks and delivery claims of the
// resumable uploads live in the tracker's redis, if it has one, so that
// instances sharing the upload folder can each serve any request of any
// upload and deliver each upload once (docs/resumable.md, "Behind a load
// balancer"); nil without redis: file locks in the folder.
func (h *Handler) resumableCoordinator() func() (resumable.Coordinator, error) {
	if h.redisURL == "" {
		return nil
	}
	url, tracker, logger := h.redisURL, h.Tracker, h.logger.Named("resumable.redislock")
	return func() (resumable.Coordinator, error) {
		c, err := redislock.Dial(url, redislock.Config{Tracker: tracker, Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("tracker %q: redis: %w", tracker, err)
		}
		return c, nil
	}
}

// cleanupResumable lets go of the resumable Server's upload folder.
func (h *Handler) cleanupResumable() {
	if h.resumable == nil {
		return
	}
	if err := h.resumable.Close(); err != nil {
		h.logger.Error("closing resumable uploads", zap.Error(err))
	}
}

// resumableUpload is what a resumable upload's record holds beyond a
// plain upload's.
type resumableUpload struct {
	progress resumable.Progress
}

// bodyEndedState is the state an upload goes to once its whole body is
// in: delivering for a resumable upload, processing for the others.
func (u *upload) bodyEndedState() state {
	if u.resumable.Load() != nil {
		return progress.StateDelivering
	}
	return progress.StateProcessing
}

// resume marks a request of a paused resumable upload sending bytes.
func (u *upload) resume() {
	u.state.CompareAndSwap(int32(progress.StatePaused), int32(progress.StateUploading))
}

// pause marks a resumable upload between two requests.
func (u *upload) pause() {
	u.state.CompareAndSwap(int32(progress.StateUploading), int32(progress.StatePaused))
}

// deliver marks a resumable upload stored whole and being delivered; its
// body ended now, if no request's end said so before.
func (u *upload) deliver() {
	for _, from := range []state{progress.StateUploading, progress.StatePaused} {
		if u.state.CompareAndSwap(int32(from), int32(progress.StateDelivering)) {
			u.bodyEnd.CompareAndSwap(0, max(int64(time.Since(u.startedAt)), 1))
			return
		}
	}
}

// resumableStatus is the "resumable" object of a resumable upload's
// status, nil for the others. Its offset is the bytes received, which
// tusd stores as it reads them.
func (u *upload) resumableStatus(received int64) *resumable.Status {
	r := u.resumable.Load()
	if r == nil {
		return nil
	}
	s := r.progress.Status()
	s.Offset = received
	return &s
}

// resumableVersion changes whenever the upload's resumable object does
// (zero for other uploads), for the shared status document (encoding.go).
func (u *upload) resumableVersion() resumable.Version {
	if r := u.resumable.Load(); r != nil {
		return r.progress.Version()
	}
	return resumable.Version{}
}

// resumableTracker is the handler's tracker as package resumable uses it.
type resumableTracker struct{ h *Handler }

// Track starts tracking a resumable upload, or returns its record if it
// is still in flight.
func (t resumableTracker) Track(id, group string, total, stored int64, progress resumable.Progress) (resumable.Record, error) {
	h := t.h
	for range 2 { // a second try if another request started it meanwhile
		if u := h.tracker.get(id); u != nil && u.resumable.Load() != nil && !u.currentState().Final() {
			return &resumableRecord{h: h, u: u, group: group}, nil
		}
		u, err := h.begin(context.Background(), id, group, total, func(u *upload) { // lifecycle.go
			u.received.Store(stored)
			u.resumable.Store(&resumableUpload{progress: progress})
		})
		if errors.Is(err, errInFlight) && h.tracker.get(id) != nil {
			continue // started here meanwhile: take its record
		}
		if err != nil {
			return nil, err
		}
		return &resumableRecord{h: h, u: u, group: group}, nil
	}
	return nil, fmt.Errorf("upload ID %q: %w", id, errInFlight)
}

// ShowsToken reports whether r shows upload id's token, with
// status_access token (false without it): besides the ways every
// progress route takes it, a tus client may send it in the header it got
// it in, X-Upload-Token, which leaves Authorization to the backend.
func (t resumableTracker) ShowsToken(r *http.Request, id string) bool {
	return t.h.access.on() && t.h.showsToken(r, uploadToken, id, uploadTokenHeader)
}

// Allows reports whether r may act on upload id: with status_access
// token, only if it shows the upload's token (ShowsToken); without
// tokens, anyone holding the upload's URL may.
func (t resumableTracker) Allows(r *http.Request, id string) bool {
	return !t.h.access.on() || t.ShowsToken(r, id)
}

// resumableRecord is one resumable upload's record.
type resumableRecord struct {
	h     *Handler
	u     *upload
	group string
}

// CountBody wraps r.Body in the counting and throttled body.
func (r *resumableRecord) CountBody(req *http.Request) {
	if req.Body == nil || req.Body == http.NoBody {
		return
	}
	req.Body = &countingBody{ReadCloser: req.Body, upload: r.u, throttle: r.h.newThrottle(), ctx: req.Context()}
}

func (r *resumableRecord) Uploading()  { r.u.resume() }
func (r *resumableRecord) Paused()     { r.u.pause() }
func (r *resumableRecord) Delivering() { r.u.deliver() }

// Stored raises received to offset (never lowers it: this instance's
// own requests count their bytes as they read them).
func (r *resumableRecord) Stored(offset int64) {
	for {
		cur := r.u.received.Load()
		if offset <= cur || r.u.received.CompareAndSwap(cur, offset) {
			return
		}
	}
}

// Announce sets the upload's and its group's tokens on the creation's
// answer, with status_access token (access.go).
func (r *resumableRecord) Announce(w http.ResponseWriter) {
	r.h.setTokenHeaders(w, r.u.id, r.group)
}

func (r *resumableRecord) Finish(st state, status int, msg string) {
	r.h.finish(r.u, st, status, msg)
}

// Interface guards
var (
	_ resumable.Tracker = resumableTracker{}
	_ resumable.Record  = (*resumableRecord)(nil)
)
