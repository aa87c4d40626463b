package redistracker

import (
	"errors"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
)

// State is where an upload is in its life (progress.State); Redis
// holds its name (String), read back with progress.NamedState.
type State = progress.State

// Doc is one published status document of an upload.
type Doc struct {
	ID    string
	Group string // "" when the upload is in no group
	State State
	// Seq numbers the documents of one ID, counting up across
	// instances; a subscriber that sees a Seq at or below one it already
	// has may drop it (a lookup and a message can overlap).
	Seq int64
	// JSON is the document as the core encoded it, or as LostDoc made it.
	JSON []byte
}

// Final reports whether this is the last document of the upload.
func (d Doc) Final() bool { return d.State.Final() }

var (
	// ErrInFlight means another upload with the ID is in flight on some
	// instance (its lease is held); the core answers 409.
	ErrInFlight = errors.New("an upload with this ID is already in flight")
	// ErrFull means the tracker holds max_uploads records across the
	// cluster and all of them are in flight.
	ErrFull = errors.New("the tracker is full of uploads in flight")
	// ErrUnavailable means Redis did not answer (down, slow, or this
	// instance has marked it down); the core carries on locally.
	ErrUnavailable = errors.New("redis is unavailable")
	// ErrNotFound means Redis holds no record of the ID or group.
	ErrNotFound = errors.New("no such upload")
	// ErrClosed means the tracker was closed.
	ErrClosed = errors.New("the redis tracker is closed")
)
