package redistracker

import (
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"net/url"
)

// keyPrefix starts every key and channel name of the package.
const keyPrefix = "upload_progress:"

// keys names the Redis keys and channels of one tracker. Names (tracker,
// upload and group IDs) are query-escaped in keys, so a ':' or a brace
// in a tracker name can neither mix two namespaces nor cut a hash tag
// short. Every upload's keys share the hash tag {<tracker>:<id>}, so a
// Redis Cluster keeps them in one slot; the tracker-wide indexes share
// {<tracker>}. The layout is in the package doc (doc.go).
type keys struct {
	tracker string // escaped
}

func newKeys(tracker string) keys {
	return keys{tracker: url.QueryEscape(tracker)}
}

// record is the hash of one upload or reservation.
func (k keys) record(id string) string {
	return keyPrefix + "{" + k.tracker + ":" + url.QueryEscape(id) + "}:record"
}

// uploadChannel carries the documents of one upload.
func (k keys) uploadChannel(id string) string {
	return keyPrefix + "{" + k.tracker + ":" + url.QueryEscape(id) + "}:events"
}

// group is the hash of a group's member documents, by member ID.
func (k keys) group(group string) string {
	return keyPrefix + "group:{" + k.tracker + ":" + url.QueryEscape(group) + "}:members"
}

// groupChannel carries the documents of a group's members.
func (k keys) groupChannel(group string) string {
	return keyPrefix + "group:{" + k.tracker + ":" + url.QueryEscape(group) + "}:events"
}

// live is the sorted set of uploads in flight, scored by the deadline
// of their lease (Redis server time, milliseconds).
func (k keys) live() string { return keyPrefix + "tracker:{" + k.tracker + "}:live" }

// done is the sorted set of finished uploads and reservations, scored
// by when their record expires.
func (k keys) done() string { return keyPrefix + "tracker:{" + k.tracker + "}:done" }

// watch carries the IDs that an instance watches (watch.go), to every
// instance of the tracker.
func (k keys) watch() string { return keyPrefix + "tracker:{" + k.tracker + "}:watch" }

// demand is the sorted set of instances sharing rate_limit_total,
// scored by when their last registration expires.
func (k keys) demand() string { return keyPrefix + "tracker:{" + k.tracker + "}:demand" }

// demandCount is the hash of each instance's demand (throttled uploads).
func (k keys) demandCount() string {
	return keyPrefix + "tracker:{" + k.tracker + "}:demand_count"
}

// validateID reports why an ID of the given kind ("upload", "group",
// "instance") cannot be used: the rules of upload IDs
// (progress.ValidateName), which also keep spaces and control
// characters, the separators of a published message, out.
func validateID(kind, id string) error { return progress.ValidateName(kind+" ID", id) }
