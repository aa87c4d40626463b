package caddyprogress

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// The progress routes (status, events, WebSocket, nginx report, and
// their group forms) make the same checks before they look anything up,
// written once here: admit (the token, the method, the ID), then, for
// the routes that stream, admitStream (a reconnect after the end, the
// subscriber caps).

// progressRead is one request to a progress route: what it names, and
// how the route words its refusals.
type progressRead struct {
	id    string
	group bool // id names a group (?group=<id>), not an upload

	methods []string // the methods a read of the route takes
	allow   string   // its Allow header: methods, and those it takes elsewhere (POST <status_path>)
	usage   string   // what the route takes, after "method X not allowed here: "
	idParam string   // where the ID came from, before an invalid ID's error; "" for the path
	noID    error    // when the request names no ID at all: its 400; nil to check the ID as it is

	// hidden answers a read without the ID's token; nil: as for an
	// unknown ID (404 {"id": "...", "status": "unknown"}, or {"group": ...}).
	hidden func() error
}

// progressReadOf is the read of the ID id (the rest of the route's
// path), or with an empty one and ?group=<id>, of that group.
func progressReadOf(r *http.Request, id string) progressRead {
	if id == "" && r.URL.Query().Has(groupQuery) {
		return progressRead{id: r.URL.Query().Get(groupQuery), group: true, idParam: groupQuery + " query parameter"}
	}
	return progressRead{id: id}
}

// tokenKind is the kind of token that opens the read.
func (q progressRead) tokenKind() string {
	if q.group {
		return groupToken
	}
	return uploadToken
}

// admit makes the checks every progress route makes before it looks
// anything up, in this order, and reports whether the route goes on;
// when not, the answer is written and err is what the route returns:
//   - with status_access token, a read (GET, HEAD) of a valid ID that
//     does not show the ID's token is answered as for an unknown ID
//     (hidden), with nothing looked up, here or through redis;
//   - a method the route does not take gets 405, with Allow;
//   - a missing or invalid ID gets 400, saying why.
func (h *Handler) admit(w http.ResponseWriter, r *http.Request, q progressRead) (bool, error) {
	if h.hides(r, q) {
		if q.hidden != nil {
			return false, q.hidden()
		}
		if q.group {
			return false, writeJSON(w, http.StatusNotFound, shortGroupStatus{Group: q.id, Status: "unknown"})
		}
		return false, writeJSON(w, http.StatusNotFound, shortStatus{ID: q.id, Status: "unknown"})
	}
	if !slices.Contains(q.methods, r.Method) {
		allow := q.allow
		if allow == "" {
			allow = strings.Join(q.methods, ", ")
		}
		w.Header().Set("Allow", allow)
		return false, h.writeError(w, r, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed here: %s", r.Method, q.usage))
	}
	if q.noID != nil {
		return false, h.writeError(w, r, http.StatusBadRequest, q.noID)
	}
	validate := validateID
	if q.group {
		validate = validateGroupID
	}
	if err := validate(q.id); err != nil {
		if q.idParam != "" {
			err = fmt.Errorf("%s: %w", q.idParam, err)
		}
		return false, h.writeError(w, r, http.StatusBadRequest, err)
	}
	return true, nil
}

// hides reports whether the read must be answered as for an unknown ID:
// a read (GET, HEAD) of a valid ID without its token, with
// status_access token. Requests that are refused anyway (a method not
// allowed, an invalid ID) are left to admit, which says why.
func (h *Handler) hides(r *http.Request, q progressRead) bool {
	if !h.access.on() || q.noID != nil || validateID(q.id) != nil {
		return false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	return !h.tokenAllows(r, q.tokenKind(), q.id)
}

// lastEventIDKey is the header EventSource sends when it reconnects.
var lastEventIDKey = http.CanonicalHeaderKey("Last-Event-ID")

// isReconnect reports whether r is an EventSource reconnecting.
func isReconnect(r *http.Request) bool {
	_, ok := r.Header[lastEventIDKey]
	return ok
}

// admitStream makes the checks of a route that streams, after admit: a
// reconnect (Last-Event-ID, reconnects true: Server-Sent Events) to an
// upload or group that has ended, or is unknown, gets 204 No Content,
// which makes EventSource stop reconnecting; past max_subscribers or
// max_subscribers_per_upload, 503 with Retry-After. It returns the
// function that counts the stream out, or nil when the answer is
// written (err is then what the route returns).
func (h *Handler) admitStream(w http.ResponseWriter, r *http.Request, q progressRead, reconnects bool) (func(), error) {
	if reconnects && isReconnect(r) && h.ended(r, q) {
		w.WriteHeader(http.StatusNoContent)
		return nil, nil
	}
	return h.subscribe(w, r, q.id, q.group)
}

// ended reports whether the upload or group has ended (every member),
// or is unknown.
func (h *Handler) ended(r *http.Request, q progressRead) bool {
	if q.group {
		return h.uploads.groupEnded(q.id)
	}
	return h.uploads.lookup(r.Context(), q.id, false).ended()
}

// follow sends the upload's or group's events to s until the final one,
// or until s ends (follow.go, groupevents.go).
func (h *Handler) follow(s eventSink, q progressRead) {
	if q.group {
		h.followGroup(s, q.id)
	} else {
		h.followUpload(s, q.id)
	}
}
