package caddyprogress

import (
	"context"
	"errors"
	"time"

	"golang.org/x/time/rate"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/redistracker"
)

// The Redis implementation of sharedBackend (sharedbackend.go): the one file of the
// core that imports redistracker. Both speak progress.State; it maps
// redistracker's errors to the core's.

// redisTimeout bounds each Redis call made on a request's path (the
// claim of a starting upload, a reservation, a lookup, a subscription);
// past it the call fails, Redis is marked down and the tracker carries
// on locally. redistracker's default, 50ms, marked Redis down again and
// again with 1,000 uploads starting at once on a busy 2-core machine
// (BenchmarkThousandUploadsInFlight), though it answered.
const redisTimeout = 250 * time.Millisecond

// newRedisBackend connects the handler's tracker to Redis at url.
func newRedisBackend(url string, h *Handler) (sharedBackend, error) {
	t, err := redistracker.New(redistracker.Config{
		URL:        url,
		Tracker:    h.Tracker,
		Interval:   time.Duration(h.Interval),
		Retain:     time.Duration(h.Retain),
		MaxUploads: h.MaxUploads,
		Instance:   instanceName, // admin_cluster.go
		Timeout:    redisTimeout,
		LostDoc:    lostDoc,
		Summary:    summaryJSON, // shareddoc.go
		Logger:     h.logger.Named("redis"),
	})
	if err != nil {
		return nil, err
	}
	return redisBackend{t}, nil
}

// sharedKey is a comparable form of a redis URL, its password hashed;
// an error if the URL cannot be used.
func sharedKey(url string) (string, error) { return redistracker.Key(url) }

type redisBackend struct{ t *redistracker.Tracker }

func (c redisBackend) claim(ctx context.Context, id, group string, doc []byte) (sharedUpload, error) {
	u, err := c.t.Claim(ctx, id, group, progress.StateUploading, doc)
	if err != nil {
		return nil, coreError(err)
	}
	return redisUpload{u}, nil
}

func (c redisBackend) reserve(ctx context.Context, id string, doc []byte) error {
	return coreError(c.t.Reserve(ctx, id, doc))
}

func (c redisBackend) lookup(ctx context.Context, id string) (sharedDoc, error) {
	d, err := c.t.Lookup(ctx, id)
	if err != nil {
		return sharedDoc{}, coreError(err)
	}
	return coreDoc(d), nil
}

func (c redisBackend) lookupGroup(ctx context.Context, group string) ([]sharedDoc, error) {
	docs, err := c.t.LookupGroup(ctx, group)
	if err != nil {
		return nil, coreError(err)
	}
	out := make([]sharedDoc, len(docs))
	for i, d := range docs {
		out[i] = coreDoc(d)
	}
	return out, nil
}

func (c redisBackend) watchDue(id string) bool { return c.t.WatchDue(id) }

func (c redisBackend) watch(ctx context.Context, id string) error {
	return coreError(c.t.Watch(ctx, id))
}

func (c redisBackend) watchEvery() time.Duration { return c.t.WatchEvery() }

func (c redisBackend) subscribe(ctx context.Context, id string, group bool) (sharedSubscription, error) {
	var s *redistracker.Subscription
	var err error
	if group {
		s, err = c.t.SubscribeGroup(ctx, id)
	} else {
		s, err = c.t.Subscribe(ctx, id)
	}
	if err != nil {
		return nil, coreError(err)
	}
	return redisSubscription{s}, nil
}

func (c redisBackend) shareRate(total rate.Limit, limiter *rate.Limiter, demand func() int) {
	c.t.ShareRate(total, limiter, demand)
}

func (c redisBackend) health() sharedHealth {
	h := c.t.Health()
	return sharedHealth{Up: h.Up, LastError: h.LastError, Since: h.Since}
}

func (c redisBackend) stats() sharedStats {
	s := c.t.Stats()
	return sharedStats{
		roundTrips:     s.RoundTrips,
		errors:         s.Errors,
		published:      s.Published,
		lost:           s.Lost,
		aborted:        s.Aborted,
		docBytes:       s.DocBytes,
		latencyBuckets: redistracker.LatencyBuckets,
		latencyCounts:  s.PublishLatency.Counts,
		latencyCount:   s.PublishLatency.Count,
		latencySum:     s.PublishLatency.Sum,
	}
}

func (c redisBackend) close() error { return c.t.Close() }

func (c redisBackend) list(ctx context.Context) (sharedListing, error) {
	l, err := c.t.List(ctx)
	if err != nil {
		return sharedListing{}, coreError(err)
	}
	out := sharedListing{self: l.Instance, inFlight: l.InFlight, truncated: l.Truncated, skipped: l.Skipped,
		uploads: make([]sharedListed, len(l.Uploads))}
	for i, u := range l.Uploads {
		out.uploads[i] = sharedListed{doc: coreDoc(u.Doc), instance: u.Instance}
	}
	return out, nil
}

type redisUpload struct{ u *redistracker.Upload }

func (u redisUpload) publish(st state, doc []byte) { u.u.Publish(st, doc) }

func (u redisUpload) watched() bool { return u.u.Watched() }

func (u redisUpload) setCurrent(f func() (state, []byte)) { u.u.SetCurrent(f) }

type redisSubscription struct{ s *redistracker.Subscription }

func (s redisSubscription) notify() <-chan struct{} { return s.s.Notify() }
func (s redisSubscription) close()                  { s.s.Close() }

func (s redisSubscription) take() []sharedDoc {
	docs := s.s.Take()
	out := make([]sharedDoc, len(docs))
	for i, d := range docs {
		out[i] = coreDoc(d)
	}
	return out
}

func coreDoc(d redistracker.Doc) sharedDoc {
	return sharedDoc{id: d.ID, group: d.Group, state: d.State, seq: d.Seq, json: d.JSON}
}

// coreError maps redistracker's errors to the core's.
func coreError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, redistracker.ErrInFlight):
		return errInFlight
	case errors.Is(err, redistracker.ErrFull):
		return errTrackerFull
	case errors.Is(err, redistracker.ErrNotFound):
		return errSharedNotFound
	}
	return errSharedUnavailable
}

// Interface guards
var (
	_ sharedBackend      = redisBackend{}
	_ sharedUpload       = redisUpload{}
	_ sharedSubscription = redisSubscription{}
)
