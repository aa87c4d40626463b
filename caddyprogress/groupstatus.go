package caddyprogress

import (
	"fmt"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"io"
	"net/http"
	"time"
)

// writeGroupStatus answers a read of the group with its GroupStatus;
// 404 {"group": "...", "status": "unknown"} when no record of a member
// is left (with redis, here or on another instance).
func (h *Handler) writeGroupStatus(w http.ResponseWriter, r *http.Request, id string) error {
	members, _ := h.uploads.groupMembers(r.Context(), id, time.Now())
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

// groupReservation is the 201 body of POST <status_path>?group: the
// reserved group ID, "pending", and with status_access token the
// group's token.
type groupReservation struct {
	Group  string `json:"group"`
	Status string `json:"status"`
	Token  string `json:"token,omitempty"`
}

// serveGroupReserve answers POST <status_path>?group with a fresh group
// ID (128 random bits, like an upload's) and, with status_access token,
// its token, also in the X-Upload-Group and X-Upload-Group-Token
// headers. It is how a client gets a group's token before its first
// upload ends, to start several uploads of the group at once: each
// sends both headers. Nothing is kept: the ID is one nobody else can
// name, and the token is all a member needs to show; the group exists
// from its first member's start (until then its status reads unknown,
// and its events wait in pending). A client may not choose the ID: a
// name of its own could be in use (and saying so would tell a stranger
// it exists).
func (h *Handler) serveGroupReserve(w http.ResponseWriter, r *http.Request, named string) error {
	if named != "" {
		return h.writeError(w, r, http.StatusBadRequest,
			fmt.Errorf("%s query parameter: a group reservation makes a fresh group ID; send POST %s?%s without one", groupQuery, h.StatusPath, groupQuery))
	}
	res := groupReservation{Group: newID(), Status: progress.StatePending.String()}
	w.Header().Set(groupHeader, res.Group)
	if h.access.on() {
		res.Token = h.token(groupToken, res.Group)
		w.Header().Set(groupTokenHeader, res.Token)
	}
	return writeJSON(w, http.StatusCreated, res)
}
