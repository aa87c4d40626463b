package caddyprogress

import (
	"fmt"
	"io"
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
	members, _ := h.groupMembersShared(r.Context(), id, time.Now(), nil) // with redis, those on other instances too
	if len(members) == 0 {
		return writeJSON(w, http.StatusNotFound, shortGroupStatus{Group: id, Status: "unknown"})
	}
	g := lookAtGroup(id, members)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	if err := g.writeTo(w); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}
