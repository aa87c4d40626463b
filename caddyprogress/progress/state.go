package progress

// State is where an upload is in its life. The status documents name it
// in their "status" field (String).
type State int32

// The states of an upload, in the order an upload goes through them.
// Pending is a reserved ID; Uploading, Processing, and a resumable
// upload's Paused and Delivering are in flight; the last three are
// final.
const (
	StatePending    State = iota // reserved (POST <status_path>), not started
	StateUploading               // the body is being read from the client
	StateProcessing              // every byte received, the backend's answer awaited
	StatePaused                  // a resumable upload between two requests
	StateDelivering              // a resumable upload stored whole, being delivered to the backend
	StateComplete                // answered below 400
	StateError                   // answered 400 or above, or failed
	StateAborted                 // the client went away, or gave up, before the body ended
)

// names are the states' names, by State.
var names = [...]string{
	StatePending:    "pending",
	StateUploading:  "uploading",
	StateProcessing: "processing",
	StatePaused:     "paused",
	StateDelivering: "delivering",
	StateComplete:   "complete",
	StateError:      "error",
	StateAborted:    "aborted",
}

// String is the state's name in a status document: "uploading",
// "complete"...; "unknown" for a value that is no state.
func (s State) String() string {
	if s < 0 || int(s) >= len(names) {
		return "unknown"
	}
	return names[s]
}

// ParseState is the state named name, and whether there is one.
func ParseState(name string) (State, bool) {
	for s, n := range names {
		if n == name {
			return State(s), true
		}
	}
	return StatePending, false
}

// NamedState is the state named name, or pending (neither in flight
// nor final) for a name that is none: a document's "status", or a name
// read back from Redis.
func NamedState(name string) State {
	st, _ := ParseState(name)
	return st
}

// Final reports whether an upload in this state has ended.
func (s State) Final() bool { return s >= StateComplete }

// InFlight reports whether an upload in this state has started and not
// ended.
func (s State) InFlight() bool { return s >= StateUploading && s < StateComplete }
