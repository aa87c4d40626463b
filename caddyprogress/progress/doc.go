// Package progress is the vocabulary every part of the module shares:
// an upload's states, the status documents the routes serve (one
// upload, its files, a group, a resumable upload's storage and
// delivery), and the rules of upload and group IDs.
//
// It imports nothing of the module, so the core (package
// caddyprogress), its resumable subpackage and the caddy
// upload-progress command use one definition of each, and none keeps a
// copy that could drift.
package progress
