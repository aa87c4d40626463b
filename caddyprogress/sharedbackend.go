package caddyprogress

import (
	"context"
	"errors"
	"time"

	"golang.org/x/time/rate"
)

// A tracker with a redis setting shares its uploads with the other
// Caddy instances that name the same tracker and Redis: an upload
// running on instance A can be followed through instance B. The core
// knows the shared side only through the interfaces below; the Redis
// implementation lives in the redistracker subpackage, wrapped in
// sharedredis.go, the one file of the core that imports it.
//
// What goes through it: the uploading instance claims each upload's ID
// across the cluster (a live duplicate gets 409 wherever it arrives)
// and publishes its document at start, at most once per interval while
// another instance watches it, and at the end; the status, events,
// nginx and group routes of another instance watch the uploads they
// serve and read those documents (a lookup, then pub/sub). A body's
// Read never waits on it.

// sharedBackend is the shared side of one tracker: what the other
// instances see of it, and what it sees of theirs.
type sharedBackend interface {
	// claim claims id across the cluster for an upload starting here,
	// in group ("" for none), with its first document: errInFlight if
	// it is in flight elsewhere, errTrackerFull at max_uploads across
	// the cluster. While the shared backend is unavailable it returns a
	// handle anyway, and the upload goes on locally.
	claim(ctx context.Context, id, group string, doc []byte) (sharedUpload, error)
	// reserve records a reservation across the cluster: errTrackerFull,
	// errInFlight, errSharedUnavailable (kept locally only) or nil.
	reserve(ctx context.Context, id string, doc []byte) error
	// lookup returns the latest document of id published anywhere:
	// errSharedNotFound, errSharedUnavailable.
	lookup(ctx context.Context, id string) (sharedDoc, error)
	// lookupGroup returns the latest documents of a group's members.
	lookupGroup(ctx context.Context, group string) ([]sharedDoc, error)
	// watchDue reports whether this instance should watch id now (at
	// most once per half watch period per ID), and records it.
	watchDue(id string) bool
	// watch has the instance that runs id (or claims it soon) publish
	// its progress for one watch period, and hand its current document
	// over at once.
	watch(ctx context.Context, id string) error
	// watchEvery is how often a follower renews its watch.
	watchEvery() time.Duration
	// subscribe follows one upload's documents (or a group's members')
	// from the moment it returns: subscribe first, then look up.
	subscribe(ctx context.Context, id string, group bool) (sharedSubscription, error)
	// shareRate shares rate_limit_total among the instances: limiter is
	// set to this instance's part of total; demand counts the uploads
	// waiting on it here.
	shareRate(total rate.Limit, limiter *rate.Limiter, demand func() int)
	// health and stats are for the admin listing and the metrics.
	health() sharedHealth
	stats() sharedStats
	close() error
	// list reads the uploads in flight on every instance (this one's
	// included), bounded, for the admin listing (admin_cluster.go):
	// errSharedUnavailable.
	list(ctx context.Context) (sharedListing, error)
}

// sharedUpload is this instance's handle on an upload it claimed.
type sharedUpload interface {
	// publish hands over the upload's latest document; it never blocks.
	// A progress document goes out only while the upload is watched.
	publish(st state, doc []byte)
	// watched reports whether another instance watches the upload.
	watched() bool
	// setCurrent sets what reads the upload's current document (it must
	// not block): sent when a watch is heard, and stored with lease
	// renewals while nobody watches the upload.
	setCurrent(f func() (state, []byte))
}

// sharedSubscription is one local subscriber's queue of documents.
type sharedSubscription interface {
	notify() <-chan struct{}
	take() []sharedDoc
	close()
}

// sharedDoc is one published document of an upload.
type sharedDoc struct {
	id, group string
	state     state
	seq       int64 // counts up per ID across the cluster
	json      []byte
}

// sharedHealth is whether the shared backend answers.
type sharedHealth struct {
	Up        bool
	LastError string
	Since     time.Time
}

// sharedStats are the shared side's counters, for the metrics.
type sharedStats struct {
	roundTrips, errors, published, lost, aborted uint64
	docBytes                                     uint64    // bytes of documents sent
	latencyBuckets                               []float64 // upper bounds, seconds
	latencyCounts                                []uint64  // cumulative
	latencyCount                                 uint64
	latencySum                                   float64
}

// sharedListing is the uploads in flight across the cluster.
type sharedListing struct {
	self      string // this instance's name
	uploads   []sharedListed
	inFlight  int64 // every instance's, listed or not
	truncated bool  // uploads in flight were left out (past the bounds)
	skipped   int   // records left out for a document too long to read
}

// sharedListed is one upload of a listing and the instance that runs it.
type sharedListed struct {
	doc      sharedDoc
	instance string
}

var (
	// errSharedUnavailable means the shared backend did not answer; the
	// tracker carries on locally.
	errSharedUnavailable = errors.New("the shared backend is unavailable")
	// errSharedNotFound means the shared backend holds no such record.
	errSharedNotFound = errors.New("no such shared record")
)
