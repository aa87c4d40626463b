package caddyprogress

import (
	"errors"
	"fmt"
	"net/http"
)

var (
	// errTooManySubscribers means the tracker serves max_subscribers
	// event streams already.
	errTooManySubscribers = errors.New("too many event streams are open")
	// errTooManyForOne means one upload or group has
	// max_subscribers_per_upload event streams already.
	errTooManyForOne = errors.New("too many event streams follow this upload")
)

// subscriberCounts are the event streams a tracker serves, in all and
// by the upload or group they follow (so an ID that has not started yet
// counts too). Guarded by the tracker's lock; an ID is in a map only
// while a stream follows it.
type subscriberCounts struct {
	total   int
	byID    map[string]int
	byGroup map[string]int
}

// subscribe counts one more event stream of the upload id (or of the
// group id, when group is true), unless that would pass maxTotal for
// the tracker or maxPerID for the ID. It returns the function that
// counts the stream out.
func (t *tracker) subscribe(id string, group bool, maxTotal, maxPerID int) (func(), error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := &t.subscribers
	if c.byID == nil {
		c.byID, c.byGroup = make(map[string]int), make(map[string]int)
	}
	counts := c.byID
	if group {
		counts = c.byGroup
	}
	switch {
	case c.total >= maxTotal:
		return nil, errTooManySubscribers
	case counts[id] >= maxPerID:
		return nil, errTooManyForOne
	}
	c.total++
	counts[id]++
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		c.total--
		if counts[id]--; counts[id] == 0 {
			delete(counts, id)
		}
	}, nil
}

// subscribe counts one more event stream of an upload or a group, or
// answers 503 with Retry-After when there are too many; then it
// returns a nil release and the error writeError returned.
func (h *Handler) subscribe(w http.ResponseWriter, r *http.Request, id string, group bool) (func(), error) {
	release, err := h.tracker.subscribe(id, group, h.MaxSubscribers, h.MaxSubscribersPerUpload)
	if err != nil {
		w.Header().Set("Retry-After", "1")
		return nil, h.writeError(w, r, http.StatusServiceUnavailable, fmt.Errorf("cannot open an event stream: %w", err))
	}
	return release, nil
}
