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
func (k keys) release() string { return keyPrefix + "{" + k.tracker + "}:release" }
