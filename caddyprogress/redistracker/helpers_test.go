package redistracker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
)

// newTestTracker connects a tracker, as one instance, to the test's
// Redis, and closes it when the test ends.
func newTestTracker(t testing.TB, srv *testredis.Server, cfg Config) *Tracker {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = srv.URL()
	}
	if cfg.Tracker == "" {
		cfg.Tracker = "test"
	}
	if cfg.Timeout == 0 {
		// a busy test machine (the packages run in parallel) may take
		// longer than the default 50ms for a round trip, or 500ms for a
		// first call that opens the pub/sub connection; the tests of the
		// bound set it themselves
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		// Info: go-redis's debug lines go to the first tracker's logger
		// for the whole process, after this test has ended too
		cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.InfoLevel))
	}
	tr, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// progressDoc is a status document like the core's.
func progressDoc(id string, state State, received int) []byte {
	return fmt.Appendf(nil, `{"id":%q,"status":%q,"received":%d}`, id, state, received)
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// next waits up to d for the subscription's next document.
func next(t testing.TB, s *Subscription, pending *[]Doc, d time.Duration) Doc {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for len(*pending) == 0 {
		select {
		case <-s.Notify():
			*pending = append(*pending, s.Take()...)
		case <-timer.C:
			t.Fatalf("no document within %v", d)
		}
	}
	doc := (*pending)[0]
	*pending = (*pending)[1:]
	return doc
}

func bg() context.Context { return context.Background() }

// watchAll has w watch the uploads, as a follower on another instance
// does, and waits until each knows it is watched: their progress
// documents are published from then on.
func watchAll(t testing.TB, w *Tracker, uploads ...*Upload) {
	t.Helper()
	for _, u := range uploads {
		if err := w.Watch(bg(), u.ID()); err != nil {
			t.Fatalf("watch of %s: %v", u.ID(), err)
		}
	}
	waitFor(t, 2*time.Second, "the uploads to be watched", func() bool {
		for _, u := range uploads {
			if !u.Watched() {
				return false
			}
		}
		return true
	})
}

// subscribed subscribes tr to the upload id's documents, or fails; the
// subscription closes when the test ends.
func subscribed(t testing.TB, tr *Tracker, id string) *Subscription {
	t.Helper()
	s, err := tr.Subscribe(bg(), id)
	if err != nil {
		t.Fatalf("subscribing to %s: %v", id, err)
	}
	t.Cleanup(s.Close)
	return s
}

// claimed claims id on tr for an upload in group ("" for none) with
// the document of an upload that has received nothing yet, or fails.
func claimed(t testing.TB, tr *Tracker, id, group string) *Upload {
	t.Helper()
	u, err := tr.Claim(bg(), id, group, progress.StateUploading, progressDoc(id, progress.StateUploading, 0))
	if err != nil {
		t.Fatalf("claiming %s: %v", id, err)
	}
	return u
}
