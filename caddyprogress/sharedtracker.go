package caddyprogress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// sharedSet is a tracker's shared sides, one per redis setting in use
// (a reload may change it: the old one serves the old config's uploads
// until that config is cleaned up). Handlers of one config that name
// one tracker agree on redis (trackersettings.go).
type sharedSet struct {
	mu      sync.Mutex
	entries map[string]*sharedEntry // by sharedKey
}

// sharedEntry is one shared side, kept in the tracker's pool entry so
// that it survives reloads, and closed when no handler uses it.
type sharedEntry struct {
	key  string
	c    sharedBackend
	refs int
	stop chan struct{} // ends the publisher loop

	// truncated counts the documents sent without their files, past
	// maxSharedDoc (shareddoc.go).
	truncated atomic.Uint64
}

// sharedHandle joins a local upload to its claim across the cluster.
type sharedHandle struct {
	up    sharedUpload
	entry *sharedEntry
	sent  docVersion // the version last published; the publisher loop's own
}

// resolveRedis replaces the placeholders of the handler's redis setting
// and makes its comparable key (redisURL, redisKey; both "" without).
func (h *Handler) resolveRedis() error {
	if h.Redis == "" {
		return nil
	}
	url := caddy.NewReplacer().ReplaceAll(h.Redis, "")
	if url == "" {
		return fmt.Errorf("redis is empty once its placeholders are replaced (is its environment variable set?)")
	}
	key, err := sharedKey(url)
	if err != nil {
		return fmt.Errorf("tracker %q: redis: %w", h.Tracker, err)
	}
	h.redisURL, h.redisKey = url, key
	return nil
}

// provisionShared gives the handler the tracker's shared side for its
// redis setting (resolveRedis), made on first use.
func (h *Handler) provisionShared() error {
	if h.redisKey == "" {
		return nil
	}
	url, key := h.redisURL, h.redisKey
	s := &h.tracker.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.entries == nil {
		s.entries = make(map[string]*sharedEntry)
	}
	e := s.entries[key]
	if e == nil {
		c, err := newRedisBackend(url, h) // sharedredis.go
		if err != nil {
			return fmt.Errorf("tracker %q: redis: %w", h.Tracker, err)
		}
		e = &sharedEntry{key: key, c: c, stop: make(chan struct{})}
		s.entries[key] = e
		go h.tracker.publishShared(e, time.Duration(h.Interval))
	}
	e.refs++
	h.shared = e
	return nil
}

// releaseShared lets go of the handler's shared side, closing it when
// no handler uses it any more.
func (h *Handler) releaseShared() {
	if h.tracker == nil {
		return
	}
	s := &h.tracker.shared
	s.mu.Lock()
	e := h.shared
	last := false
	if e != nil {
		e.refs--
		if last = e.refs == 0; last {
			delete(s.entries, e.key)
			close(e.stop)
		}
	}
	s.mu.Unlock()
	if !last {
		return
	}
	// outside the lock: closing sends what is left to publish (up to 1s)
	if err := e.c.close(); err != nil {
		h.logger.Warn("closing the tracker's redis connection", zap.String("tracker", h.Tracker), zap.Error(err))
	}
}

// keyName names a redis setting in an error message.
func keyName(key string) string {
	if key == "" {
		return "none"
	}
	return fmt.Sprintf("%q", key)
}

// claim claims u's ID, a new upload of t in group, across the
// instances. On errInFlight or errTrackerFull the local record is
// dropped and the error returned; an unavailable store is no error (the
// upload goes on locally).
func (e *sharedEntry) claim(ctx context.Context, t *tracker, u *upload, group string) error {
	d, doc := e.docOf(u, time.Now())
	up, err := e.c.claim(ctx, u.id, group, doc)
	if errors.Is(err, errInFlight) || errors.Is(err, errTrackerFull) {
		t.discard(u)
		return err
	}
	if up == nil {
		return nil
	}
	u.shared.Store(&sharedHandle{up: up, entry: e, sent: d.version})
	up.setCurrent(func() (state, []byte) { // for a watch heard, and lease renewals
		d, doc := e.docOf(u, time.Now())
		return d.summary.state, doc
	})
	return nil
}

// publishFinal hands the final document of an ended upload over.
func publishFinal(u *upload) {
	if sh := u.shared.Load(); sh != nil {
		if d := u.finalDoc.Load(); d != nil {
			sh.up.publish(d.summary.state, sh.entry.capped(d))
		}
	}
}

// reserve records u, a reservation of t made here, across the
// instances: errTooManyReservations when they are full (the local one
// is dropped).
func (e *sharedEntry) reserve(ctx context.Context, t *tracker, u *upload) error {
	_, doc := e.docOf(u, time.Now())
	err := e.c.reserve(ctx, u.id, doc)
	if errors.Is(err, errTrackerFull) || errors.Is(err, errInFlight) {
		t.discard(u)
		return errTooManyReservations
	}
	return nil
}

// discard forgets a record that was refused across the cluster.
func (t *tracker) discard(u *upload) {
	u.finish(progress.StateError, 0, "refused across the cluster", time.Now())
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.uploads[u.id] == u {
		t.remove(u)
	}
}

// publishShared hands the documents of the tracker's uploads in flight
// that use e over to e's publisher, those that changed and that another
// instance watches, every half interval, until e is closed (the shared
// side sends each upload's at most once per interval). It reads what
// the status route reads: a body's Read never takes part.
func (t *tracker) publishShared(e *sharedEntry, interval time.Duration) {
	ticker := time.NewTicker(max(interval/2, time.Millisecond))
	defer ticker.Stop()
	var due []*upload
	for {
		select {
		case <-e.stop:
			return
		case <-ticker.C:
		}
		due = due[:0]
		t.mu.RLock()
		for _, u := range t.uploads {
			if sh := u.shared.Load(); sh != nil && sh.entry == e && !u.currentState().Final() && u.version() != sh.sent && sh.up.watched() {
				due = append(due, u)
			}
		}
		t.mu.RUnlock()
		now := time.Now()
		for _, u := range due {
			sh := u.shared.Load()
			d, doc := e.docOf(u, now)
			if d.summary.state.Final() {
				continue // publishFinal sends it
			}
			sh.sent = d.version
			sh.up.publish(d.summary.state, doc)
		}
		clear(due)
	}
}

// uploadingCount counts the tracker's uploads reading their body: the
// demand for rate_limit_total shared across instances.
func (t *tracker) uploadingCount() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n := 0
	for _, u := range t.uploads {
		if u.currentState() == progress.StateUploading {
			n++
		}
	}
	return n
}

// sharedEntries returns the tracker's shared sides in use.
func (t *tracker) sharedEntries() []*sharedEntry {
	s := &t.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	entries := make([]*sharedEntry, 0, len(s.entries))
	for _, e := range s.entries {
		entries = append(entries, e)
	}
	return entries
}

// docJSON is a document's whole status JSON.
func docJSON(d *statusDoc) []byte {
	b := make([]byte, 0, d.size())
	b = append(b, d.head...)
	b = append(b, d.files...)
	return append(b, '}')
}

// docFromJSON makes a document of a status JSON published by another
// instance, and tells the answer's status code (0 for none).
func docFromJSON(b []byte) (*statusDoc, int, error) {
	var s Status
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, 0, fmt.Errorf("reading a shared status document: %w", err)
	}
	var bodyEnd int64
	if s.FinishedAt != nil {
		bodyEnd = max(int64(s.FinishedAt.Sub(s.StartedAt)), 1)
	}
	upstream := 0
	if s.UpstreamStatus != nil {
		upstream = *s.UpstreamStatus
	}
	return encodeDoc(s, s.StartedAt, bodyEnd), upstream, nil
}

// lostDoc is the final document of an upload whose instance was lost,
// made from its last published one: aborted, "instance lost".
func lostDoc(last []byte) []byte {
	var s Status
	if err := json.Unmarshal(last, &s); err != nil {
		s = Status{}
	}
	now := time.Now().UTC()
	s.Status = progress.StateAborted.String()
	s.Error = "instance lost"
	s.FinishedAt = &now
	s.UpdatedAt = now
	s.Speed = 0
	if s.Total != nil {
		zero := 0.0
		s.Remaining = &zero
	} else {
		s.Remaining = nil
	}
	return docJSON(encodeDoc(s, s.StartedAt, 0))
}
