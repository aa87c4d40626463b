package caddyprogress

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminPath is the admin API route's prefix.
const adminPath = "/upload_progress/"

// adminAPI is the admin API module admin.api.upload_progress: routes on
// Caddy's admin endpoint (never on a site) that show the trackers'
// uploads to an operator.
//
//	GET /upload_progress/                the trackers and their uploads in flight
//	GET /upload_progress/<tracker>/<id>  one upload's status (404 when unknown)
//
// With ?cluster=1, a tracker with redis lists the uploads in flight on
// every instance, and an upload unknown here is looked up in Redis
// (admin_cluster.go).
//
// Like every admin.api module, it is loaded with the admin endpoint and
// needs no configuration.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.upload_progress",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// The listing's documents (progress.Listing and the types in it), under
// the core's names.
type (
	adminListing = progress.Listing
	adminTracker = progress.TrackerListing
	adminUpload  = progress.ListedUpload
	adminCluster = progress.ClusterListing
	adminRedis   = progress.RedisHealth
)

// Routes returns the admin routes under /upload_progress/.
func (a adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{
		Pattern: adminPath,
		Handler: caddy.AdminHandlerFunc(a.serve),
	}}
}

func (a adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{
			HTTPStatus: http.StatusMethodNotAllowed,
			Err:        fmt.Errorf("method %s not allowed: GET %s lists uploads in flight", r.Method, adminPath),
		}
	}
	cluster, err := wantCluster(r)
	if err != nil {
		return err
	}
	rest := strings.TrimPrefix(r.URL.Path, adminPath)
	if rest == "" {
		return writeJSON(w, http.StatusOK, listTrackers(r.Context(), time.Now(), cluster))
	}
	name, id, ok := strings.Cut(rest, "/")
	if !ok || name == "" || id == "" || strings.Contains(id, "/") {
		return caddy.APIError{
			HTTPStatus: http.StatusNotFound,
			Err:        fmt.Errorf("%s: no such route; GET %s or %s<tracker>/<id>", r.URL.Path, adminPath, adminPath),
		}
	}
	if err := validateID(id); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	t := liveTracker(name)
	if t == nil {
		return caddy.APIError{
			HTTPStatus: http.StatusNotFound,
			Err:        fmt.Errorf("no tracker named %q is in use", name),
		}
	}
	rec := t.lookup(id)
	if !rec.found() && cluster {
		if found, err := t.lookupCluster(r.Context(), w, r, id); found {
			return err
		}
	}
	return writeRecord(w, r, id, rec)
}

// listTrackers describes every tracker in use, by name; with cluster,
// the uploads of every instance, for trackers with redis.
func listTrackers(ctx context.Context, now time.Time, cluster bool) adminListing {
	var all []*tracker
	trackers.Range(func(_, value any) bool {
		if t, ok := value.(*tracker); ok {
			all = append(all, t)
		}
		return true
	})
	listing := adminListing{Trackers: make([]adminTracker, 0, len(all))}
	for _, t := range all {
		desc := t.describe(now)
		if cluster {
			t.describeCluster(ctx, &desc) // outside the pool's Range: it waits on Redis
		}
		listing.Trackers = append(listing.Trackers, desc)
	}
	slices.SortFunc(listing.Trackers, func(a, b adminTracker) int { return cmp.Compare(a.Name, b.Name) })
	return listing
}

// liveTracker returns the tracker in use with the given name, or nil.
func liveTracker(name string) *tracker {
	var found *tracker
	trackers.Range(func(key, value any) bool {
		if key == name {
			found, _ = value.(*tracker)
			return false
		}
		return true
	})
	return found
}

// describe lists the tracker's uploads in flight, oldest first.
func (t *tracker) describe(now time.Time) adminTracker {
	t.mu.RLock()
	records := t.records()
	memory := t.memory.used()
	var inFlight []*upload
	groups := make(map[*upload]string)
	for _, u := range t.uploads {
		switch u.currentState() {
		case progress.StateUploading, progress.StateProcessing, progress.StatePaused, progress.StateDelivering:
			inFlight = append(inFlight, u)
			if u.group != nil {
				groups[u] = u.group.id
			}
		}
	}
	t.mu.RUnlock()

	slices.SortFunc(inFlight, func(a, b *upload) int {
		return cmp.Or(a.startedAt.Compare(b.startedAt), cmp.Compare(a.id, b.id))
	})
	desc := adminTracker{
		Name:      t.name,
		Records:   records,
		Memory:    memory,
		MaxMemory: t.memory.max.Load(),
		Uploads:   make([]adminUpload, 0, len(inFlight)),
		Redis:     t.describeShared(),
	}
	for _, u := range inFlight {
		s := u.snapshot(now)
		if s.FinishedAt != nil {
			continue // finished since the tracker was read
		}
		desc.Uploads = append(desc.Uploads, adminUpload{
			ID:        s.ID,
			Status:    s.Status,
			Received:  s.Received,
			Total:     s.Total,
			Speed:     s.Speed,
			StartedAt: s.StartedAt,
			Group:     groups[u],
			Files:     s.Files,
		})
	}
	return desc
}

// Interface guard
var _ caddy.AdminRouter = adminAPI{}
