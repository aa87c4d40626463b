package resumable

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/ratelog"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/tus/tusd/v2/pkg/handler"
	"go.uber.org/zap"
)

// Options are what the upload_progress handler gives its Server.
type Options struct {
	// Tracker tracks each upload (caddyprogress implements it).
	Tracker Tracker
	// IDHeader is the response header that carries the upload ID.
	IDHeader string
	// Logger is the handler's.
	Logger *zap.Logger
	// Load tells config loads apart (any value one load shares, such as
	// its metrics registry): handlers of one load that share a dir must
	// agree on its settings. Nil skips that check.
	Load any
	// NewCoordinator makes the Coordinator of the upload folder when it
	// is first used (coordinator.go): the one over the tracker's redis,
	// so that instances sharing the folder take turns on each upload.
	// Nil: the local one, for a folder that one process uses.
	NewCoordinator func() (Coordinator, error)
	// OpenS3 opens the bucket of the s3 setting (package s3store); nil
	// refuses s3.
	OpenS3 func(S3Config, *zap.Logger) (Storage, error)
}

// Server serves the tus endpoint of one upload_progress handler: it
// checks each request, hands it to tusd, and delivers each finished
// upload to the backend.
type Server struct {
	cfg    Config
	opts   Options
	spool  *spool
	tusd   http.Handler
	cors   *handler.CorsConfig // tusd's, for the answers written here too (cors.go)
	data   handler.DataStore   // tusd's, in the spool's Storage
	logger *zap.Logger

	refusalLog ratelog.Gate // refuse's lines, at most one a second
	storeLog   ratelog.Gate // the store's failures in requests, likewise
}

// New makes the Server of a provisioned handler; cfg has its defaults.
// Close it in the handler's Cleanup. Its errors name the resumable
// block's setting that is wrong, so the caller returns them as they are.
func New(cfg Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	key, open, err := storageOf(&cfg, opts)
	if err != nil {
		return nil, err
	}
	sp, err := loadSpool(key, open, opts.NewCoordinator)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.storeSetting(), err)
	}
	s := &Server{cfg: cfg, opts: opts, spool: sp, logger: opts.Logger}
	if err := sp.join(s, opts.Load); err != nil {
		_, _ = spools.Delete(key)
		return nil, fmt.Errorf("resumable: %w", err)
	}
	if err := s.newTusd(); err != nil {
		sp.leave(s)
		_, _ = spools.Delete(key)
		return nil, fmt.Errorf("resumable: %w", err)
	}
	sp.start(s)
	return s, nil
}

// Close lets go of the upload store; the last config using it stops
// its background work.
func (s *Server) Close() error {
	s.spool.dropRoute(s)
	s.spool.leave(s)
	if _, err := spools.Delete(s.spool.store.Key()); err != nil {
		return fmt.Errorf("releasing %s: %w", s.cfg.storeSetting(), err)
	}
	return nil
}

// storageOf returns the key of the store cfg names and how to open it;
// a dir is made absolute in cfg.
func storageOf(cfg *Config, opts Options) (string, func() (Storage, error), error) {
	if cfg.S3 != nil {
		if opts.OpenS3 == nil {
			return "", nil, fmt.Errorf("resumable s3: this build has no S3 store")
		}
		s3cfg := *cfg.S3
		return s3cfg.Key(), func() (Storage, error) { return opts.OpenS3(s3cfg, opts.Logger) }, nil
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return "", nil, fmt.Errorf("resumable dir %q: %w", cfg.Dir, err)
	}
	cfg.Dir = dir
	return dir, func() (Storage, error) { return newFileStorage(dir) }, nil
}

// Handles reports whether the request is for the tus endpoint.
func (s *Server) Handles(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, s.cfg.Path)
}

// Observe keeps the route of any request the handler sees, when a
// delivery waits for one (after a restart, or a reload).
func (s *Server) Observe(r *http.Request, next caddyhttp.Handler) {
	if s.spool.waiting.Load() > 0 {
		s.spool.offerRoute(routeOf(s, r, next))
	}
}

func routeOf(s *Server, r *http.Request, next caddyhttp.Handler) route {
	server, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return route{srv: s, next: next, server: server, key: requestRoute(r)}
}

// requestState is what the tusd callbacks need from the request being
// served; it travels in the request's context.
type requestState struct {
	w     http.ResponseWriter
	r     *http.Request // as it reached the handler, its body counted
	next  caddyhttp.Handler
	group string
	body  *lazyBody // the creation request's body, counted once the upload exists
	entry *entry    // the upload, once known
	// sending is set while the request counts in entry.requests (it
	// may send bytes), so the sweeper leaves the upload alone.
	sending bool
	// answered is set when the answer is the backend's, passed on as it is.
	answered bool
	// code is the status tusd answered with; creation is set for a
	// creation request (see requestEnded).
	code     int
	creation bool
	// interrupted is set when another request asked for the upload's
	// lock that this one holds (interrupted.go).
	interrupted atomic.Bool
}

type stateKey struct{}

// ServeHTTP serves the tus endpoint: POST <path> creates an upload, and
// HEAD, PATCH, DELETE and OPTIONS <path><id> go to tusd once the ID, the
// upload's token (with status_access token) and the upload's delivery
// state allow them.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	s.spool.offerRoute(routeOf(s, r, next))
	r = s.withoutOwnOrigin(r) // a same-origin page is not subject to cors_origins
	if override := r.Header.Get("X-HTTP-Method-Override"); r.Method == http.MethodPost && override != "" {
		r.Method = strings.ToUpper(override) // as tusd would, but before the checks here
		r.Header.Del("X-HTTP-Method-Override")
	}
	st := &requestState{w: w, r: r, next: next}
	id := strings.TrimPrefix(r.URL.Path, s.cfg.Path)
	if id == "" {
		if r.Method == http.MethodPost {
			return s.serveCreate(w, r, st)
		}
		return s.serveTusd(w, r, st)
	}
	if err := validateID(id); err != nil {
		return s.refuse(w, r, http.StatusBadRequest, err)
	}
	if r.Method == http.MethodOptions {
		return s.serveTusd(w, r, st)
	}
	// with status_access token, an upload is the business of its token's
	// holder only: anyone else gets the answer for an unknown ID, before
	// anything is looked up
	if !s.opts.Tracker.Allows(r, id) {
		return s.refuseUnknown(w, r, id)
	}
	rec, err := readRecord(s.spool.store, id)
	if errors.Is(err, os.ErrNotExist) {
		return s.refuseUnknown(w, r, id)
	}
	if err != nil {
		if s.storeLog.Allow() { // a store that does not answer fails every request
			s.logger.Error("reading delivery record", zap.String("id", id), zap.Error(err))
		}
		return s.refuse(w, r, http.StatusInternalServerError, errors.New("the upload's record cannot be read"))
	}
	if !requestRoute(r).accepts(rec) { // another site's upload, in a shared dir
		return s.refuse(w, r, http.StatusNotFound, fmt.Errorf("no upload with ID %s", id))
	}
	switch rec.Delivery {
	case deliveryDelivering:
		return s.serveDelivering(w, r, s.spool.entry(rec))
	case deliveryDelivered, deliveryFailed:
		return s.serveEnded(w, r, rec) // no entry: the upload is over
	}
	e := s.spool.entry(rec)
	st.entry = e
	switch r.Method {
	case http.MethodHead:
		s.track(e, rec)
		return s.serveTusd(w, r, st)
	case http.MethodPatch:
		return s.servePatch(w, r, st, rec)
	case http.MethodDelete:
		return s.serveDelete(w, r, st, rec)
	}
	return s.serveTusd(w, r, st)
}

// refuseUnknown answers a request for an upload that does not exist, or
// that r has no token for: the two answers are the same.
func (s *Server) refuseUnknown(w http.ResponseWriter, r *http.Request, id string) error {
	return s.refuse(w, r, http.StatusNotFound, fmt.Errorf("no upload with ID %s", id))
}

// serveTusd hands the request to tusd, with st in its context.
func (s *Server) serveTusd(w http.ResponseWriter, r *http.Request, st *requestState) error {
	r = r.WithContext(context.WithValue(r.Context(), stateKey{}, st))
	s.tusd.ServeHTTP(&tusdWriter{ResponseWriter: w, s: s, r: r, st: st}, r)
	return nil
}

// serveCreate creates an upload through tusd. Its callback beforeCreate
// checks the metadata and the disk and starts tracking; the body of a
// creation-with-upload is counted from then on.
func (s *Server) serveCreate(w http.ResponseWriter, r *http.Request, st *requestState) error {
	group, err := uploadGroup(r)
	if err != nil {
		return s.refuse(w, r, http.StatusBadRequest, err)
	}
	st.group = group
	st.creation = true
	st.body = &lazyBody{ReadCloser: r.Body}
	tusReq := r.Clone(r.Context())
	tusReq.Body = st.body
	defer s.requestEnded(st)
	return s.serveTusd(w, tusReq, st)
}

// servePatch appends a request's bytes to an upload through tusd,
// counted and throttled by the tracker, and within max_disk (disk.go).
func (s *Server) servePatch(w http.ResponseWriter, r *http.Request, st *requestState, rec *deliveryRecord) error {
	e := st.entry
	e.requests.Add(1) // from here, the sweeper leaves the reservation alone
	offset, _ := strconv.ParseInt(r.Header.Get("Upload-Offset"), 10, 64)
	offset = max(offset, 0)
	need := min(offset+max(r.ContentLength, 0), s.cfg.MaxSize) // past max_size, the body gets 413
	info, infoErr := s.uploadInfo(r.Context(), e.id)
	if infoErr == nil && !info.SizeIsDeferred {
		need = info.Size // reserved again if it lapsed (reserve_for)
	}
	if err := s.spool.reserveAtLeast(e.id, need, s.cfg.MaxDisk); err != nil {
		e.requests.Add(-1)
		return s.refuseDiskFull(w, r)
	}
	e.heldSince.Store(time.Now().UnixNano())
	tracked := s.track(e, rec)
	if infoErr == nil {
		tracked.Stored(info.Offset) // some may have come through another instance
	}
	st.sending = true
	tracked.Uploading()
	s.limitBody(r, e.id, offset)
	tracked.CountBody(r)
	defer s.requestEnded(st)
	return s.serveTusd(w, r, st)
}

// requestEnded pauses the upload after a request, unless it is being
// delivered or has ended, and updates its expiry and disk reservation.
// An upload whose body was refused past a limit is removed if its
// client cannot go on with it: a creation (the client never got its
// URL), or a deferred length past max_size.
func (s *Server) requestEnded(st *requestState) {
	e := st.entry
	if e == nil {
		return
	}
	if st.sending {
		e.requests.Add(-1)
	}
	if e.deliveryState() != deliveryReceiving {
		return
	}
	info, infoErr := s.uploadInfo(context.Background(), e.id)
	refused := st.code == http.StatusRequestEntityTooLarge || st.code == http.StatusInsufficientStorage
	if refused && (st.creation || (st.code == http.StatusRequestEntityTooLarge && infoErr == nil && info.SizeIsDeferred)) {
		s.removeRefused(e, st.code)
		return
	}
	if st.creation && errors.Is(infoErr, handler.ErrNotFound) {
		// the store refused to create it (its record was written
		// before): no client has its URL, nothing of it may stay
		s.removeRefused(e, st.code)
		return
	}
	s.spool.mu.Lock()
	tracked := e.tracked
	s.spool.mu.Unlock()
	if tracked != nil {
		tracked.Paused()
	}
	e.setExpiry(time.Now().Add(s.cfg.expire()))
	if infoErr == nil {
		keep := info.Offset
		if !info.SizeIsDeferred {
			keep = info.Size // for reserve_for, then releaseHold lets it go
		}
		s.spool.settle(e.id, info.Offset, keep)
		e.heldSince.Store(time.Now().UnixNano())
	}
}

// removeRefused removes an upload whose body was refused with code (413
// or 507), or whose creation the store refused, and which its client
// cannot go on with; it ends aborted.
func (s *Server) removeRefused(e *entry, code int) {
	rec, err := readRecord(s.spool.store, e.id)
	if err != nil {
		rec = &deliveryRecord{ID: e.id, Delivery: deliveryReceiving, Created: time.Now()}
	}
	msg := "refused: the upload store could not create it"
	switch code {
	case http.StatusRequestEntityTooLarge:
		msg = "refused: larger than max_size"
	case http.StatusInsufficientStorage:
		msg = "refused: the upload store is full (max_disk)"
	}
	s.ended(e, rec, progress.StateAborted, 0, msg)
	if err := removeUpload(s.spool.store, e.id); err != nil {
		s.logger.Error("removing a refused upload", zap.String("id", e.id), zap.Error(err))
	}
}

// serveDelete terminates an upload through tusd, then forgets it.
func (s *Server) serveDelete(w http.ResponseWriter, r *http.Request, st *requestState, rec *deliveryRecord) error {
	_ = s.serveTusd(w, r, st)
	if st.code != http.StatusNoContent && st.code != http.StatusNotFound {
		return nil // not terminated, nor gone already
	}
	s.ended(st.entry, rec, progress.StateAborted, 0, "terminated by the client")
	if err := removeUpload(s.spool.store, rec.ID); err != nil {
		s.logger.Error("removing a terminated upload", zap.String("id", rec.ID), zap.Error(err))
	}
	return nil
}

// lazyBody is the body of a creation request, which can only be counted
// once the upload exists (in beforeCreate).
type lazyBody struct{ io.ReadCloser }
