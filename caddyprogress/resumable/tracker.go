package resumable

import (
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"net/http"
)

// Tracker is what this package needs from the upload tracker of the
// handler it serves; caddyprogress implements it (its resumable.go).
type Tracker interface {
	// Track starts tracking the upload id, or returns the record still
	// in flight for it. total is the upload's length (-1 while it is
	// deferred), stored the bytes already on disk, group the upload's
	// group ("" for none). progress gives the "resumable" object of the
	// upload's status JSON.
	Track(id, group string, total, stored int64, progress Progress) (Record, error)
	// Allows reports whether r may act on upload id: whether it shows
	// the upload's token that Announce gave its creator, when the
	// tracker gives tokens (status_access token); true when it does not.
	Allows(r *http.Request, id string) bool
	// ShowsToken reports whether r shows upload id's token; false when
	// the tracker gives no tokens.
	ShowsToken(r *http.Request, id string) bool
}

// Record is one tracked resumable upload.
type Record interface {
	// CountBody wraps r.Body in the tracker's counting and throttled
	// body, so the bytes of this request count and are rate limited like
	// those of any tracked upload.
	CountBody(r *http.Request)
	// Uploading marks a request sending bytes (from paused).
	Uploading()
	// Paused marks the time between requests (from uploading).
	Paused()
	// Delivering marks every byte stored and the delivery running.
	Delivering()
	// Stored raises the upload's received bytes to offset, the bytes
	// stored so far: with instances sharing the folder, some may have
	// come through requests of another instance.
	Stored(offset int64)
	// Finish ends the upload in a final state (progress.StateComplete,
	// StateError or StateAborted), with the backend's status code (0 for
	// none) and why it failed.
	Finish(st progress.State, status int, msg string)
	// Announce puts on the answer to the creation request what the
	// client needs to follow the upload, as the tracker gives it to any
	// upload (the tokens of status_access token).
	Announce(w http.ResponseWriter)
}

// Progress gives the resumable object of an upload's status.
type Progress interface {
	Status() Status
	// Version changes whenever Status does (but for Offset), so that a
	// status encoded once can tell it is out of date.
	Version() Version
}

// Version tells two Status values of one upload apart.
type Version struct {
	Changes   uint32 // delivery state, attempts or expiry changed
	Delivered int64
}

// Status is the "resumable" object in an upload's status JSON (see
// progress.ResumableStatus).
type Status = progress.ResumableStatus
