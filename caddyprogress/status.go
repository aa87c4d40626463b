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
// POST <status_path> by reserving a fresh ID; GET <status_path>?group=<id>
// with the group's GroupStatus, and POST <status_path>?group by reserving
// a fresh group ID (groupstatus.go).
func (h *Handler) serveStatus(w http.ResponseWriter, r *http.Request, id string) error {
	q := progressReadOf(r, id)
	switch {
	case r.Method == http.MethodPost && q.group:
		return h.serveGroupReserve(w, r, q.id)
	case r.Method == http.MethodPost && q.id == "":
		return h.serveReserve(w, r)
	}
	q.methods, q.allow = []string{http.MethodGet, http.MethodHead}, "GET, HEAD, POST" // POST reserves, above
	q.usage = fmt.Sprintf("GET %s<id> reads a status, POST %s reserves an ID", h.StatusPath, h.StatusPath)
	if q.group {
		q.usage = fmt.Sprintf("GET %s?%s=<id> reads a group's status, POST %s?%s reserves a group", h.StatusPath, groupQuery, h.StatusPath, groupQuery)
	}
	if ok, err := h.admit(w, r, q); !ok {
		return err
	}
	if q.group {
		return h.writeGroupStatus(w, r, q.id)
	}
	return writeRecord(w, r, q.id, h.uploads.lookup(r.Context(), q.id, true))
}

// writeRecord answers with the record's status document, or 404
// {"id": "...", "status": "unknown"} when there is none, or 503 when
// max_memory has no room to encode it now.
func writeRecord(w http.ResponseWriter, r *http.Request, id string, rec record) error {
	if !rec.found() {
		return writeJSON(w, http.StatusNotFound, shortStatus{ID: id, Status: "unknown"})
	}
	d := rec.document(time.Now())
	if d == nil {
		return writeNoRoomForDoc(w)
	}
	return writeDoc(w, r, d)
}

// serveReserve reserves a fresh ID for a client that wants one before it
// uploads. The reservation lasts retain.
func (h *Handler) serveReserve(w http.ResponseWriter, r *http.Request) error {
	u, err := h.uploads.reserve(r.Context(), h.retain(), h.MaxUploads, h.MaxReservations)
	if errors.Is(err, errTooManyReservations) {
		w.Header().Set("Retry-After", "1")
		return h.writeError(w, r, http.StatusServiceUnavailable, fmt.Errorf("cannot reserve an ID: %w", err))
	}
	return h.writeReservation(w, u)
}
