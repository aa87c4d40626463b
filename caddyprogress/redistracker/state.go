package redistracker

import "errors"

// State is where an upload is in its life, as the core names it.
type State string

// The states of an upload. Pending is a reservation; Uploading,
// Processing, and a resumable upload's Paused (between two requests)
// and Delivering are in flight (they hold a lease); the others are
// final.
const (
	StatePending    State = "pending"
	StateUploading  State = "uploading"
	StateProcessing State = "processing"
	StatePaused     State = "paused"
	StateDelivering State = "delivering"
	StateComplete   State = "complete"
	StateError      State = "error"
	StateAborted    State = "aborted"
)

// Final reports whether an upload in this state has ended.
func (s State) Final() bool {
	switch s {
	case StateComplete, StateError, StateAborted:
		return true
	}
	return false
}

// inFlight reports whether an upload in this state holds a lease.
func (s State) inFlight() bool {
	switch s {
	case StateUploading, StateProcessing, StatePaused, StateDelivering:
		return true
	}
	return false
}

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
