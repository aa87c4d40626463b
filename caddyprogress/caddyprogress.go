// Package caddyprogress is a Caddy HTTP handler that tracks the progress
// of uploads on their way to an upstream, and serves that progress as
// JSON (polling), as Server-Sent Events and over WebSockets.
package caddyprogress

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/ratelog"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/resumable"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults for the Handler's fields.
const (
	DefaultTracker    = "default"
	DefaultIDHeader   = "X-Upload-ID"
	DefaultIDQuery    = "X-Progress-ID"
	DefaultStatusPath = "/upload/status/"
	DefaultEventsPath = "/upload/events/"
	DefaultWSPath     = "/upload/ws/"
	DefaultInterval   = 100 * time.Millisecond
	DefaultRetain     = 5 * time.Minute
	DefaultWait       = 60 * time.Second
	DefaultMaxUploads = 100000

	DefaultMaxGroupUploads = 1000

	DefaultMaxSubscribers          = 10000
	DefaultMaxSubscribersPerUpload = 100
)

// eventWriteTimeout is how long one write to an event stream may take:
// a subscriber that stops reading is dropped after it.
var eventWriteTimeout = 10 * time.Second

// progressIDHeader is the header the nginx upload progress module reads
// the ID from; it is always accepted after id_header.
const progressIDHeader = "X-Progress-ID"

// progressIDKey is progressIDHeader in canonical form.
var progressIDKey = http.CanonicalHeaderKey(progressIDHeader)

// Handler tracks uploads that pass through it on their way to the next
// handler (usually reverse_proxy), and serves their progress.
//
// Each tracked request body is wrapped in a counting reader and streamed
// on unchanged, byte for byte; nothing is buffered. The upload gets an
// ID (the client's own, validated, or a fresh random one), which is set
// on the request forwarded upstream and on the response, both in the
// id_header field, and in the placeholder {http.upload_progress.id}.
//
// The handler also answers, before anything else:
//
//	GET  <status_path><id>   the upload's status as JSON
//	POST <status_path>       reserve a fresh ID (201 {"id": "...", "status": "pending"})
//	GET  <events_path><id>   the upload's progress as Server-Sent Events
//	GET  <ws_path><id>       the same over a WebSocket (websocket.go)
//	GET  <status_path>?group=<id>, <events_path>?group=<id>, <ws_path>?group=<id>
//	                         the same for a group of uploads (X-Upload-Group)
//	GET  <nginx_report_path>?X-Progress-ID=<id>
//	                         the progress in nginx's upload progress format (if set)
//
// The Caddyfile directive upload_progress (ordered before reverse_proxy)
// is described, with every subdirective, at UnmarshalCaddyfile.
//
// JSON: {"handler": "upload_progress", "tracker": "default", ...} with
// the same names as fields.
type Handler struct {
	// Uploads are shared by all handlers that name the same tracker, and
	// kept across config reloads. Those handlers must agree on the
	// tracker-wide settings: redis, status_access, token_secret,
	// client_ids, retain, max_uploads, max_memory, max_reservations,
	// max_group_uploads, max_subscribers, max_subscribers_per_upload,
	// rate_limit_total and burst, and with redis interval
	// (trackersettings.go). Default: "default".
	Tracker string `json:"tracker,omitempty"`

	// The request methods that are tracked. Default: POST, PUT, PATCH.
	Methods []string `json:"methods,omitempty"`

	// The request header that carries the upload ID, set on the request
	// forwarded upstream and on the response. The X-Progress-ID header
	// is accepted too. Default: X-Upload-ID.
	IDHeader string `json:"id_header,omitempty"`

	// The query parameter that may carry the upload ID, read after both
	// headers. Default: X-Progress-ID.
	IDQuery string `json:"id_query,omitempty"`

	// The path prefix of the JSON status route (and of reservations and
	// group status), or "off" to pass those requests on to the next
	// handler. Default: /upload/status/
	StatusPath string `json:"status_path,omitempty"`

	// The path prefix of the Server-Sent Events route, or "off" to pass
	// those requests on to the next handler. Default: /upload/events/
	EventsPath string `json:"events_path,omitempty"`

	// The path prefix of the WebSocket route (the events route's
	// documents, one JSON message each), or "off" to pass those requests
	// on to the next handler. Default: /upload/ws/
	WSPath string `json:"ws_path,omitempty"`

	// The origins, besides the request's own host, whose pages may open
	// the WebSocket route: patterns matched with path.Match against the
	// Origin's host (e.g. "app.example.com", "*.example.com"), or against
	// "scheme://host" when the pattern has "://". Default: none (only
	// pages of the same host; requests without Origin, from non-browser
	// clients, are always let in).
	WSOrigins []string `json:"ws_origins,omitempty"`

	// The least time between two progress events of one upload.
	// Default: 100ms.
	Interval caddy.Duration `json:"interval,omitempty"`

	// How long a finished upload (or a reservation) stays queryable.
	// Default: 5m.
	Retain caddy.Duration `json:"retain,omitempty"`

	// How long an events subscriber waits for an upload that has not
	// started. Default: 60s.
	Wait caddy.Duration `json:"wait,omitempty"`

	// How many records one tracker holds. When it is full, finished
	// records make room (the oldest first), then reservations; if every
	// record is in flight, new uploads are proxied untracked.
	// Default: 100000.
	MaxUploads int `json:"max_uploads,omitempty"`

	// The memory one tracker may make the process hold, the garbage
	// collector's headroom included: the tracker keeps (records,
	// multipart part lists, groups, reservations and encoded documents,
	// counted as they are kept) at most max_memory / (1 + GOGC/100),
	// half of it by default. Past that, finished records make room (the oldest first), then
	// reservations; a new upload that then leaves less than a sixteenth
	// free is tracked without its files, and one that does not fit is
	// proxied untracked. Tracker-wide: handlers that name one tracker
	// must set the same (trackersettings.go). Default: 64MiB.
	MaxMemory int64 `json:"max_memory,omitempty"`

	// How many uploads one group holds (X-Upload-Group). An upload past
	// it is proxied and tracked on its own, outside the group.
	// Default: 1000.
	MaxGroupUploads int `json:"max_group_uploads,omitempty"`

	// How many reserved IDs (POST <status_path>) one tracker holds at
	// once. A reservation never makes room by removing a finished
	// record; past this, or with the tracker full, POST answers 503 with
	// Retry-After. Default: a tenth of max_uploads, at least 1.
	MaxReservations int `json:"max_reservations,omitempty"`

	// How many event streams and WebSockets one tracker serves at once,
	// group ones included. Past it, a new stream gets 503 with Retry-After.
	// Default: 10000.
	MaxSubscribers int `json:"max_subscribers,omitempty"`

	// How many event streams and WebSockets follow one upload (or one
	// group) at once.
	// Past it, a new stream gets 503 with Retry-After. Default: 100.
	MaxSubscribersPerUpload int `json:"max_subscribers_per_upload,omitempty"`

	// Bytes per second for each upload. Throttling is by backpressure:
	// the body is read no faster than this, so TCP (or HTTP/2 flow
	// control) slows the client; nothing is buffered. Default: none.
	RateLimit int64 `json:"rate_limit,omitempty"`

	// Bytes per second for all uploads of this tracker together, shared
	// fairly among the uploads in flight. Default: none.
	RateLimitTotal int64 `json:"rate_limit_total,omitempty"`

	// The token bucket size in bytes, for both limits. Default: a tenth of
	// a second at the rate, at least 32KiB.
	Burst int64 `json:"burst,omitempty"`

	// The path of a route that answers like the report_uploads location
	// of nginx's upload progress module, for clients written for it:
	// GET <path> with the ID in the X-Progress-ID header or query
	// parameter, JSONP with a callback parameter. Default: none (off).
	NginxReportPath string `json:"nginx_report_path,omitempty"`

	// Who may read an upload's progress (status, events, nginx report
	// and group routes): "id", anyone who knows the ID, or "token", only
	// a client that shows the upload's token (access.go). Default: "id".
	StatusAccess string `json:"status_access,omitempty"`

	// The secret the tokens of status_access token are made with, at
	// least 16 bytes; placeholders such as {env.UPLOAD_PROGRESS_SECRET}
	// are resolved at provision time. Default: one generated once and
	// kept in Caddy's storage, shared by every instance using it.
	TokenSecret string `json:"token_secret,omitempty"`

	// A cookie that may carry the token, besides the Authorization
	// header and the token query parameter. Default: none (off).
	TokenCookie string `json:"token_cookie,omitempty"`

	// Whether uploads may name their own ID. With false, the ID a client
	// sends is ignored (a fresh 128-bit one is made) unless it names a
	// live reservation made with POST <status_path>. Default: true.
	ClientIDs *bool `json:"client_ids,omitempty"`

	// The Redis that shares the tracker's uploads with the other Caddy
	// instances naming the same tracker and Redis (several instances
	// behind a load balancer): redis://[user:password@]host[:port][/db],
	// rediss:// for TLS, unix://, redis-sentinel://...?master_name=NAME,
	// redis-cluster://... (README, "Several instances"). Placeholders
	// such as {env.REDIS_URL} are resolved at provision time. Handlers
	// that name one tracker must set the same one. Default: none (the
	// tracker is this instance's only).
	Redis string `json:"redis,omitempty"`
	// Resumable uploads (tus) stored on the proxy's disk and delivered
	// to the next handler as one request once complete. Default: none
	// (off). See package resumable and resumable.go.
	Resumable *resumable.Config `json:"resumable,omitempty"`

	tracker    *tracker
	idKey      string         // IDHeader in canonical form, the key of http.Header
	metrics    handlerMetrics // this tracker's series, looked up once
	total      *rate.Limiter  // the tracker's shared bucket, when rate_limit_total is set
	methods    map[string]bool
	logger     *zap.Logger
	stopCtx    context.Context    // done when Caddy stops or reloads
	stop       context.CancelFunc // ends stopCtx
	warnedFull *ratelog.Gate      // warnFull's lines, at most one a second
	resumable  *resumable.Server  // serves the resumable path, when configured

	access     tokenAccess   // status_access token's secret (access.go)
	refusalLog *ratelog.Gate // logRefusal's lines, at most one a second

	writeTimeout time.Duration // eventWriteTimeout, read once in Provision

	shared         *sharedEntry  // the tracker's Redis side, nil without redis (sharedtracker.go)
	uploads        uploadStore   // where the progress routes read uploads (uploadstore.go)
	redisURL       string        // Redis with its placeholders replaced; "" without (sharedtracker.go)
	redisKey       string        // sharedKey of redisURL, compared across handlers; "" without
	keepAliveEvery time.Duration // keepAliveEvery, read once in Provision
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.upload_progress",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets defaults, takes the tracker and subscribes to Caddy's
// stopping event, so open event streams never hold up a stop or reload.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.setDefaults()
	h.writeTimeout = eventWriteTimeout
	h.keepAliveEvery = keepAliveEvery

	h.idKey = http.CanonicalHeaderKey(h.IDHeader)
	h.methods = make(map[string]bool, len(h.Methods))
	for _, m := range h.Methods {
		h.methods[strings.ToUpper(m)] = true
	}

	val, loaded, err := trackers.LoadOrNew(h.Tracker, func() (caddy.Destructor, error) {
		return newTracker(h.Tracker), nil
	})
	if err != nil {
		return fmt.Errorf("loading tracker %q: %v", h.Tracker, err)
	}
	h.tracker = val.(*tracker)
	if err := h.provisionAccess(ctx); err != nil {
		return err
	}
	if err := h.resolveRedis(); err != nil { // sharedtracker.go
		return err
	}
	if err := h.claimTrackerSettings(ctx); err != nil { // the same as the config's other handlers on the tracker (trackersettings.go)
		return err
	}
	if !loaded { // a new tracker serves this config only; a running one's changes when this config runs (applyMaxMemory)
		h.tracker.setMaxMemory(h.MaxMemory)
	}
	h.metrics = newHandlerMetrics(h.Tracker)
	if h.RateLimitTotal > 0 {
		h.total = h.tracker.totalLimiter(h.RateLimitTotal, h.burst(h.RateLimitTotal))
	}
	if err := h.provisionShared(); err != nil { // redis (sharedtracker.go)
		return err
	}
	h.uploads = h.newUploadStore() // the tracker, or with redis the tracker and the other instances (sharedstore.go)

	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}

	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok {
		srv.RegisterConnContext(withConn) // for clientPresence (clientpresence.go)
	}

	h.stopCtx, h.stop = context.WithCancel(context.Background())
	h.warnedFull = new(ratelog.Gate)
	h.refusalLog = new(ratelog.Gate)
	if err := h.subscribeToEvents(ctx); err != nil {
		return err
	}
	return h.provisionResumable(ctx)
}

// subscribeToEvents has Caddy's events app tell the handler when its
// config stops (ending event streams) and once it runs (the order check,
// and the tracker-wide max_memory and rate_limit_total of this config).
func (h *Handler) subscribeToEvents(ctx caddy.Context) error {
	eventsAppIface, err := ctx.App("events")
	if err != nil {
		return fmt.Errorf("getting events app: %v", err)
	}
	eventsApp := eventsAppIface.(*caddyevents.App)
	if err := eventsApp.On("stopping", stopHandler{h}); err != nil {
		return fmt.Errorf("subscribing to the stopping event: %v", err)
	}
	started := []caddyevents.Handler{orderCheck{h: h, ctx: ctx}, applyMaxMemory{h}} // ordercheck.go, memory.go
	if h.total != nil {
		// the shared rate changes once this config runs (throttle.go)
		started = append(started, applyTotalRate{h})
	}
	for _, handler := range started {
		if err := eventsApp.On("started", handler); err != nil {
			return fmt.Errorf("subscribing to the started event: %v", err)
		}
	}
	return nil
}

func (h *Handler) setDefaults() {
	if h.Tracker == "" {
		h.Tracker = DefaultTracker
	}
	if len(h.Methods) == 0 {
		h.Methods = []string{http.MethodPost, http.MethodPut, http.MethodPatch}
	}
	if h.IDHeader == "" {
		h.IDHeader = DefaultIDHeader
	}
	if h.IDQuery == "" {
		h.IDQuery = DefaultIDQuery
	}
	if h.StatusPath == "" {
		h.StatusPath = DefaultStatusPath
	}
	if h.EventsPath == "" {
		h.EventsPath = DefaultEventsPath
	}
	if h.WSPath == "" {
		h.WSPath = DefaultWSPath
	}
	if h.Interval == 0 {
		h.Interval = caddy.Duration(DefaultInterval)
	}
	if h.Retain == 0 {
		h.Retain = caddy.Duration(DefaultRetain)
	}
	if h.Wait == 0 {
		h.Wait = caddy.Duration(DefaultWait)
	}
	if h.MaxUploads == 0 {
		h.MaxUploads = DefaultMaxUploads
	}
	if h.MaxMemory == 0 {
		h.MaxMemory = DefaultMaxMemory
	}
	if h.MaxGroupUploads == 0 {
		h.MaxGroupUploads = DefaultMaxGroupUploads
	}
	if h.MaxReservations == 0 {
		h.MaxReservations = max(h.MaxUploads/10, 1)
	}
	if h.MaxSubscribers == 0 {
		h.MaxSubscribers = DefaultMaxSubscribers
	}
	if h.MaxSubscribersPerUpload == 0 {
		h.MaxSubscribersPerUpload = DefaultMaxSubscribersPerUpload
	}
}

// Validate checks the handler's configuration.
func (h *Handler) Validate() error {
	if err := progress.ValidateName(fmt.Sprintf("tracker name %q", h.Tracker), h.Tracker); err != nil {
		return err
	}
	for _, m := range h.Methods {
		if m == "" || strings.ContainsAny(m, " \t/") {
			return fmt.Errorf("method %q is not a valid HTTP method", m)
		}
	}
	if err := h.validateRoutes(); err != nil {
		return err
	}
	if err := h.validateOrigins(); err != nil {
		return err
	}
	if err := h.validateAccess(); err != nil {
		return err
	}
	if h.Interval < 0 || h.Retain < 0 || h.Wait < 0 {
		return fmt.Errorf("interval, retain and wait must not be negative")
	}
	if h.MaxUploads < 0 {
		return fmt.Errorf("max_uploads must not be negative")
	}
	if h.MaxMemory < minMaxMemory {
		return fmt.Errorf("max_memory %d is too small: at least %d bytes (%s)", h.MaxMemory, minMaxMemory, "64KiB")
	}
	if h.MaxGroupUploads < 0 || h.MaxReservations < 0 {
		return fmt.Errorf("max_group_uploads and max_reservations must not be negative")
	}
	if h.MaxSubscribers < 0 || h.MaxSubscribersPerUpload < 0 {
		return fmt.Errorf("max_subscribers and max_subscribers_per_upload must not be negative")
	}
	if h.RateLimit < 0 || h.RateLimitTotal < 0 || h.Burst < 0 {
		return fmt.Errorf("rate_limit, rate_limit_total and burst must not be negative")
	}
	if h.Burst > 0 && h.RateLimit == 0 && h.RateLimitTotal == 0 {
		return fmt.Errorf("burst is set, but neither rate_limit nor rate_limit_total")
	}
	return nil
}

// Cleanup ends this config's event streams and lets go of the tracker.
func (h *Handler) Cleanup() error {
	h.stopStreams()
	h.releaseShared()
	h.releaseTrackerSettings()
	h.cleanupResumable()
	if _, err := trackers.Delete(h.Tracker); err != nil {
		return fmt.Errorf("releasing tracker %q: %v", h.Tracker, err)
	}
	return nil
}

func (h *Handler) stopStreams() {
	if h.stop != nil { // nil if never provisioned
		h.stop()
	}
}

// stopHandler ends a handler's event streams on Caddy's stopping event.
type stopHandler struct{ h *Handler }

func (s stopHandler) Handle(context.Context, caddy.Event) error {
	s.h.stopStreams()
	return nil
}

// applyMaxMemory sets the tracker's max_memory to the handler's on
// Caddy's started event, once the config the handler belongs to runs:
// set at provision time, a reload refused later (another handler on the
// tracker disagreeing, or another module refusing its config) would
// leave the old config running with the new limit.
type applyMaxMemory struct{ h *Handler }

func (a applyMaxMemory) Handle(context.Context, caddy.Event) error {
	a.h.tracker.setMaxMemory(a.h.MaxMemory)
	return nil
}

// ServeHTTP serves the status, events and nginx report routes, tracks
// uploads, and passes every other request to the next handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if h.resumable != nil {
		h.resumable.Observe(r, next) // a delivery may wait for the route (resumable.go)
	}
	switch {
	case h.NginxReportPath != "" && r.URL.Path == h.NginxReportPath:
		return h.serveNginxReport(w, r)
	case h.StatusPath != routeOff && strings.HasPrefix(r.URL.Path, h.StatusPath):
		return h.serveStatus(w, r, strings.TrimPrefix(r.URL.Path, h.StatusPath))
	case h.EventsPath != routeOff && strings.HasPrefix(r.URL.Path, h.EventsPath):
		return h.serveEvents(w, r, strings.TrimPrefix(r.URL.Path, h.EventsPath))
	case h.WSPath != routeOff && strings.HasPrefix(r.URL.Path, h.WSPath):
		return h.serveWebSocket(w, r, strings.TrimPrefix(r.URL.Path, h.WSPath))
	case h.resumable != nil && h.resumable.Handles(r):
		_, _ = h.screenGroup(r) // a creation joins a group only with its token (group.go); resumable refuses an invalid one
		return h.resumable.ServeHTTP(w, r, next)
	case h.tracks(r):
		return h.serveUpload(w, r, next)
	}
	return next.ServeHTTP(w, r)
}

// tracks reports whether r is an upload to track: a matched method with
// a body.
func (h *Handler) tracks(r *http.Request) bool {
	return h.methods[r.Method] && r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// burst is the token bucket size for a limit of bytesPerSecond.
func (h *Handler) burst(bytesPerSecond int64) int {
	if h.Burst > 0 {
		return int(h.Burst)
	}
	return defaultBurst(bytesPerSecond)
}

// newThrottle returns the throttle for one upload, or nil for none.
func (h *Handler) newThrottle() *throttle {
	var perUpload *rate.Limiter
	if h.RateLimit > 0 {
		perUpload = newLimiter(h.RateLimit, h.burst(h.RateLimit))
	}
	return newThrottle(perUpload, h.total)
}

// warnFull logs, at most once a second, that an upload went untracked.
func (h *Handler) warnFull(id string) {
	if !h.warnedFull.Allow() {
		return
	}
	h.logger.Warn("tracker full of uploads in flight; proxying upload untracked",
		zap.String("tracker", h.Tracker),
		zap.Int("max_uploads", h.MaxUploads),
		zap.Int64("max_memory", h.MaxMemory),
		zap.String("id", id))
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyevents.Handler         = stopHandler{}
	_ caddyevents.Handler         = applyMaxMemory{}
)
