package caddyprogress

import (
	"fmt"
	"net/http"
	"time"
)

// serveGroupStatus answers GET <status_path>?group=<id> with the group's
// GroupStatus; 404 {"group": "...", "status": "unknown"} when no record
// of a member is left.
func (h *Handler) serveGroupStatus(w http.ResponseWriter, r *http.Request, id string) error {
	if hidden, err := h.hideWithoutToken(w, r, groupToken, id); hidden {
		return err
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return h.writeError(w, r, http.StatusMethodNotAllowed,
			fmt.Errorf("method %s not allowed here: GET %s?%s=<id> reads a group's status", r.Method, h.StatusPath, groupQuery))
	}
	if err := validateID(id); err != nil {
		return h.writeError(w, r, http.StatusBadRequest, fmt.Errorf("%s query parameter: not a valid group ID: %w", groupQuery, err))
	}
	members, _ := h.tracker.groupMembers(id)
	if len(members) == 0 {
		return writeJSON(w, http.StatusNotFound, shortGroupStatus{Group: id, Status: "unknown"})
	}
	return writeJSON(w, http.StatusOK, groupSnapshot(id, members, time.Now()))
}
