package caddyprogress

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
)

// An upload starts and ends here, whichever way it came: a plain upload
// (serveUpload, passthrough.go) or a resumable one (resumableTracker.Track,
// resumable.go). So a rule of the start (the claim across instances, the
// group, the metrics, what an untracked upload logs) holds on both.

// begin starts tracking an upload of total bytes (-1 when unknown) with
// the given ID, in group ("" for none): its record in the tracker, then,
// with redis, its claim across the instances (ctx bounds it), its place
// in the group, and the metrics. prepare, when not nil, fills the record
// before it is claimed, so that its first shared document is right (a
// resumable upload's stored bytes and progress).
//
// errInFlight means the ID is in flight here or on another instance;
// errTrackerFull that no record is free here or across the cluster: the
// caller proxies the upload untracked, and begin has logged (at most
// once a second) and counted it.
func (h *Handler) begin(ctx context.Context, id, group string, total int64, prepare func(*upload)) (*upload, error) {
	u, err := h.uploads.start(ctx, id, group, total, startLimits{rateLimit: h.RateLimit, maxUploads: h.MaxUploads}, prepare)
	if err != nil {
		if errors.Is(err, errTrackerFull) {
			h.warnFull(id)
			h.metrics.untracked.Inc()
		}
		return nil, err
	}
	if !h.tracker.join(group, u, h.MaxGroupUploads) {
		h.logger.Debug("group full; tracking the upload on its own",
			zap.String("id", id), zap.String("group", group), zap.Int("max_group_uploads", h.MaxGroupUploads))
	}
	h.metrics.started.Inc()
	return u, nil
}

// finish ends u and keeps its record for retain; the call that ends it
// publishes its final document to the other instances (with redis) and
// counts it in the metrics.
func (h *Handler) finish(u *upload, st state, upstreamStatus int, errMsg string) {
	if !h.tracker.finish(u, st, upstreamStatus, errMsg, h.retain()) {
		return
	}
	h.uploads.ended(u) // to the other instances, with redis
	h.metrics.finished[st].Inc()
	observeThrottled(h.Tracker, time.Duration(u.throttled.Load()))
}
