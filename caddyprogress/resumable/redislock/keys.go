package redislock

import "net/url"

const keyPrefix = "upload_progress:resumable:"

// keys names the Redis keys of one tracker's resumable uploads.
type keys struct{ tracker string }

func newKeys(tracker string) keys { return keys{tracker: url.QueryEscape(tracker)} }

func (k keys) lock(id string) string { return keyPrefix + "{" + k.tracker + ":" + id + "}:lock" }
func (k keys) delivery(id string) string {
	return keyPrefix + "{" + k.tracker + ":" + id + "}:delivery"
}

// disk is the hash of a store's disk reservations and their total: one
// slot, the tracker's, for both (Redis Cluster).
func (k keys) disk(store string) []string {
	base := keyPrefix + "{" + k.tracker + "}:disk:" + url.QueryEscape(store)
	return []string{base, base + ":total"}
}

// alive marks a Redis that the tracker's instances have used (see
// Coordinator.acquire).
func (k keys) alive() string { return keyPrefix + "{" + k.tracker + "}:alive" }

func (k keys) release() string { return keyPrefix + "{" + k.tracker + "}:release" }
