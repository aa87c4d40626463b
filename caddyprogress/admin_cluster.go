package caddyprogress

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/ratelog"
)

// The admin listing's view of the cluster: with ?cluster=1, a tracker
// with redis lists the uploads in flight on every instance, read from
// Redis when the route is called (never in a loop), each marked with
// the instance that runs it. Without the parameter, the listing is this
// instance's alone, as every other admin route of Caddy is, and costs
// no Redis round trip.

// instanceName names this instance across the cluster (instanceNameOf).
var instanceName = func() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "caddy"
	}
	return instanceNameOf(host, os.Getpid())
}()

// instanceNameOf is the name of the instance with the given host name
// and process ID, so that two Caddy processes on one host differ: the
// host name in the characters of an ID (progress.IsIDChar; others
// become -), at most 100 bytes, then ":" and the process ID.
func instanceNameOf(host string, pid int) string {
	host = strings.Map(func(r rune) rune {
		if r < utf8.RuneSelf && progress.IsIDChar(byte(r)) {
			return r
		}
		return '-'
	}, host)
	host = host[:min(len(host), 100)] // ASCII only by now
	return host + ":" + strconv.Itoa(pid)
}

// clusterLog lets at most one line a second through about listings
// whose Redis part failed.
var clusterLog ratelog.Gate

// wantCluster reads the listing's cluster query parameter: 1 or true
// for every instance's uploads.
func wantCluster(r *http.Request) (bool, error) {
	v := r.URL.Query().Get("cluster")
	if v == "" {
		return false, nil
	}
	on, err := strconv.ParseBool(v)
	if err != nil {
		return false, caddy.APIError{
			HTTPStatus: http.StatusBadRequest,
			Err:        fmt.Errorf("cluster=%q: expected 1 (every instance's uploads, with redis) or 0 (this instance's)", v),
		}
	}
	return on, nil
}

// describeCluster adds to desc, the tracker's listing, the uploads in
// flight on the other instances that share it through Redis. Local
// entries win: an upload of this instance (by its instance name or its
// ID) is listed as this instance knows it.
func (t *tracker) describeCluster(ctx context.Context, desc *adminTracker) {
	entries := t.sharedEntries()
	if len(entries) == 0 {
		return
	}
	slices.SortFunc(entries, func(a, b *sharedEntry) int { return cmp.Compare(a.key, b.key) })
	c := &adminCluster{Instance: instanceName, Available: true}
	desc.Cluster = c
	listed := make(map[string]bool, len(desc.Uploads))
	for i := range desc.Uploads {
		desc.Uploads[i].Instance = instanceName
		listed[desc.Uploads[i].ID] = true
	}
	for _, e := range entries {
		l, err := e.c.list(ctx)
		if err != nil {
			c.Available, c.InFlight, c.Truncated = false, 0, false
			if clusterLog.Allow() {
				caddy.Log().Named("admin.api.upload_progress").Warn("listing the uploads of every instance: redis did not answer; listing this instance's",
					zap.String("tracker", t.name), zap.String("last_error", e.c.health().LastError), zap.Error(err))
			}
			continue
		}
		if c.Available {
			c.InFlight = max(c.InFlight, l.inFlight)
			c.Truncated = c.Truncated || l.truncated
		}
		c.Skipped += l.skipped
		for _, u := range l.uploads {
			if u.instance == l.self || listed[u.doc.id] {
				continue
			}
			entry, ok := remoteEntry(u)
			if !ok {
				c.Skipped++
				continue
			}
			listed[entry.ID] = true
			desc.Uploads = append(desc.Uploads, entry)
		}
	}
	slices.SortStableFunc(desc.Uploads, func(a, b adminUpload) int {
		return cmp.Or(a.StartedAt.Compare(b.StartedAt), cmp.Compare(a.ID, b.ID))
	})
}

// remoteEntry is the listing's entry of an upload in flight on another
// instance, from its latest document: the fields a local entry has, and
// no other; false for a document that is not the upload's status.
func remoteEntry(u sharedListed) (adminUpload, bool) {
	var s Status
	if err := json.Unmarshal(u.doc.json, &s); err != nil || s.ID != u.doc.id || s.StartedAt.IsZero() {
		return adminUpload{}, false
	}
	status := s.Status
	if status == "" {
		status = u.doc.state.String()
	}
	switch st := progress.NamedState(status); {
	case st.String() != status:
		return adminUpload{}, false // not a state of an upload
	case st.Final() || st == progress.StatePending:
		return adminUpload{}, false // its final document is on its way
	}
	return adminUpload{
		ID:             u.doc.id,
		Status:         status,
		Received:       s.Received,
		Total:          s.Total,
		Speed:          s.Speed,
		StartedAt:      s.StartedAt,
		Group:          u.doc.group,
		Files:          s.Files,
		FilesTruncated: s.FilesTruncated,
		Instance:       u.instance,
	}, true
}

// lookupCluster answers GET /upload_progress/<tracker>/<id>?cluster=1
// for an ID this instance has no record of: the latest document another
// instance published, if Redis has one.
func (t *tracker) lookupCluster(ctx context.Context, w http.ResponseWriter, r *http.Request, id string) (bool, error) {
	for _, e := range t.sharedEntries() {
		d, err := e.c.lookup(ctx, id)
		if err != nil {
			continue
		}
		doc, _, err := docFromJSON(d.json)
		if err != nil {
			continue
		}
		return true, writeDoc(w, r, doc)
	}
	return false, nil
}
