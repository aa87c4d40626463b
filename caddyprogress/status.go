package caddyprogress

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// shortStatus is the answer for an ID without a record (unknown), or one
// only reserved (pending).
type shortStatus struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

// serveStatus answers GET <status_path><id> with the upload's Status, and
// POST <status_path> by reserving a fresh ID. GET <status_path>?group=<id>
// is a group's (groupstatus.go).
func (h *Handler) serveStatus(w http.ResponseWriter, r *http.Request, id string) error {
	if hidden, err := h.hideWithoutToken(w, r, uploadToken, id); hidden {
		return err
	}
	if id == "" && r.URL.Query().Has(groupQuery) {
		return h.serveGroupStatus(w, r, r.URL.Query().Get(groupQuery))
	}
	if id == "" && r.Method == http.MethodPost {
		return h.serveReserve(w, r)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD, POST")
		return h.writeError(w, r, http.StatusMethodNotAllowed,
			fmt.Errorf("method %s not allowed here: GET %s<id> reads a status, POST %s reserves an ID", r.Method, h.StatusPath, h.StatusPath))
	}
	if err := validateID(id); err != nil {
		return h.writeError(w, r, http.StatusBadRequest, err)
	}
	return writeRecord(w, r, id, h.lookupSharedWatched(r.Context(), id, h.tracker.lookup(id)))
}

// writeRecord answers with the record's status document, or 404
// {"id": "...", "status": "unknown"} when there is none.
func writeRecord(w http.ResponseWriter, r *http.Request, id string, rec record) error {
	switch {
	case rec.final != nil:
		return writeDoc(w, r, rec.final)
	case rec.live != nil:
		d := rec.live.doc(time.Now())
		if d == nil { // max_memory has no room to encode it now
			return writeNoRoomForDoc(w)
		}
		return writeDoc(w, r, d)
	case rec.remote != nil:
		return writeDoc(w, r, rec.remote)
	}
	return writeJSON(w, http.StatusNotFound, shortStatus{ID: id, Status: "unknown"})
}

// serveReserve reserves a fresh ID for a client that wants one before it
// uploads. The reservation lasts retain.
func (h *Handler) serveReserve(w http.ResponseWriter, r *http.Request) error {
	u, err := h.tracker.reserve(h.retain(), h.MaxUploads, h.MaxReservations)
	if err == nil {
		err = h.reserveShared(r.Context(), u) // across instances, with redis (clustertracker.go)
	}
	if errors.Is(err, errTooManyReservations) {
		w.Header().Set("Retry-After", "1")
		return h.writeError(w, r, http.StatusServiceUnavailable, fmt.Errorf("cannot reserve an ID: %w", err))
	}
	return h.writeReservation(w, u)
}
