package progress

import "time"

// Status is the JSON document that describes one upload, served by the
// status route and carried by every event:
//
//	{"id": "...", "status": "uploading", "received": 1048576, "total": 5242880,
//	 "percent": 20, "speed": 524288, "elapsed": 2.0, "remaining": 8.0,
//	 "started_at": "...", "updated_at": "...", "finished_at": null,
//	 "upstream_status": null, "rate_limit": null}
type Status struct {
	ID     string `json:"id"`
	Status string `json:"status"`

	// Received counts the bytes actually read from the client so far.
	Received int64 `json:"received"`
	// Total is the Content-Length, or null when the body has none.
	Total *int64 `json:"total"`
	// Percent is received/total as a whole number, or null without a total.
	Percent *int64 `json:"percent"`
	// Speed is in bytes per second over the last few seconds; once the
	// body has ended, the average over the whole body.
	Speed int64 `json:"speed"`
	// Elapsed is the number of seconds since the upload started (until it
	// finished, once it has).
	Elapsed float64 `json:"elapsed"`
	// Remaining is the estimated number of seconds until the body ends,
	// or null when it cannot be told.
	Remaining *float64 `json:"remaining"`

	StartedAt  time.Time  `json:"started_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	FinishedAt *time.Time `json:"finished_at"`

	// UpstreamStatus is the status code of the answer, once there is one
	// (from the upstream or from Caddy itself, e.g. 413 or 502).
	UpstreamStatus *int `json:"upstream_status"`
	// Error says what went wrong, for the error and aborted states.
	Error string `json:"error,omitempty"`
	// RateLimit is this upload's own bandwidth limit in bytes per second,
	// or null when it has none.
	RateLimit *int64 `json:"rate_limit"`

	// Resumable describes a resumable upload's storage and delivery
	// (package resumable); left out for other uploads.
	Resumable *ResumableStatus `json:"resumable,omitempty"`

	// FilesTruncated is true in a document read through Redis that left
	// its files out: the whole document took more than the 64 KiB an
	// instance shares of an upload (package caddyprogress), or max_memory had no
	// room to encode it when it was sent. The instance that runs the
	// upload serves its files. Left out otherwise.
	FilesTruncated bool `json:"files_truncated,omitempty"`

	// Files are the parts of a multipart/form-data upload, in order;
	// left out for other uploads, and for a body that is not usable
	// multipart.
	Files []FileStatus `json:"files,omitempty"`
}

// FileStatus is one part of a multipart/form-data upload, as the status
// JSON shows it in "files":
//
//	{"field": "avatar", "filename": "me.png", "received": 52431, "status": "complete"}
type FileStatus struct {
	// Field is the part's form field name ("name" of its
	// Content-Disposition), "" when it has none.
	Field string `json:"field"`
	// Filename is the part's file name as the client sent it, or null
	// for a plain form field.
	Filename *string `json:"filename"`
	// Received counts the bytes of the part's content received so far;
	// its headers and the boundaries around it count only toward the
	// upload's received.
	Received int64 `json:"received"`
	// Status is "uploading" until the boundary after the part has been
	// received, then "complete".
	Status string `json:"status"`
}

// GroupStatus is the JSON document that describes a group of uploads,
// served by GET <status_path>?group=<id> and carried by the group's
// events:
//
//	{"group": "...", "status": "uploading", "received": 3145728, "total": 10485760,
//	 "percent": 30, "speed": 1048576, "uploads": [<Status>, ...]}
type GroupStatus struct {
	GroupHead
	// Uploads are the members' statuses, in the order they started,
	// without their files (each member's own status has them).
	Uploads []Status `json:"uploads"`
}

// GroupHead is a group's status without its members: its figures.
type GroupHead struct {
	Group string `json:"group"`
	// Status is "uploading" while any member is in flight; once all have
	// ended, "error" if any ended in error, else "aborted" if any was
	// aborted, else "complete".
	Status string `json:"status"`
	// Received is the sum of the members' received.
	Received int64 `json:"received"`
	// Total is the sum of the members' totals, or null while any
	// member's total is unknown.
	Total *int64 `json:"total"`
	// Percent is received/total as a whole number, or null without a total.
	Percent *int64 `json:"percent"`
	// Speed is the sum of the speeds of the members still uploading;
	// once none is, the group's average from its first start to its last
	// body's end.
	Speed int64 `json:"speed"`
}

// ResumableStatus is the "resumable" object in an upload's status JSON:
//
//	"resumable": {"offset": 1048576, "delivered": 0, "delivery": "receiving",
//	              "attempts": 0, "expires_at": "2026-12-01T10:00:00Z"}
type ResumableStatus struct {
	// Offset is the bytes stored so far.
	Offset int64 `json:"offset"`
	// Delivered is the bytes sent to the backend so far (by the latest
	// delivery attempt).
	Delivered int64 `json:"delivered"`
	// Delivery is receiving, delivering, delivered or failed.
	Delivery string `json:"delivery"`
	// Attempts counts the deliveries tried, 0 before the first.
	Attempts int `json:"attempts"`
	// ExpiresAt is when the upload will be removed unless it goes on:
	// its last byte (or creation) plus expire while receiving, its
	// failure plus expire once failed; null while delivering or delivered.
	ExpiresAt *time.Time `json:"expires_at"`
}
