package redistracker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/ratelog"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Defaults of Config.
const (
	DefaultLease    = 5 * time.Second
	DefaultInterval = 100 * time.Millisecond
	DefaultRetain   = 5 * time.Minute
	DefaultTimeout  = 50 * time.Millisecond
)

// backgroundTimeout bounds a round trip of the package's own loops
// (publisher, renewal, scanner), which no request waits on.
const backgroundTimeout = time.Second

// startTimeout bounds what New waits for Redis (loading the scripts).
const startTimeout = 250 * time.Millisecond

// Config is one tracker's Redis side.
type Config struct {
	// URL names the Redis deployment (the forms are in the package doc).
	URL string
	// Tracker is the tracker's name: the namespace of its keys.
	Tracker string
	// Instance names this instance in the shared bandwidth registry,
	// the logs and the records of the uploads it claims (List): 1 to 128
	// bytes without spaces or control characters; default a random ID.
	Instance string
	// Lease is how long an upload's claim lasts without renewal: an
	// instance that stops renewing (it died, or lost Redis) has its
	// uploads ended as aborted ("instance lost") this long after its
	// last renewal, within one more second. Default 5s.
	Lease time.Duration
	// Interval is the least time between two published progress
	// documents of one upload (the first and the final one are sent at
	// once). Default 100ms.
	Interval time.Duration
	// Retain is how long a finished record or a reservation stays in
	// Redis. Default 5m.
	Retain time.Duration
	// MaxUploads caps the tracker's records across the cluster (live,
	// finished and reserved); 0 for no cap.
	MaxUploads int
	// Timeout bounds each call made on a request's path (Claim, Reserve,
	// Lookup, LookupGroup, Subscribe); while Redis is marked down they
	// return at once. Default 50ms.
	Timeout time.Duration
	// WatchTTL is how long one Watch keeps an upload's progress
	// documents published (watch.go). Default 10s.
	WatchTTL time.Duration
	// LostDoc builds the final document of an upload whose instance was
	// lost, from its last published one; default DefaultLostDoc.
	LostDoc func(last []byte) []byte
	// Summary makes what a group's hash and channel hold of a member's
	// document, so that reading a group never brings every member's
	// whole document; default the document itself. The core's leaves
	// out the member's files.
	Summary func(doc []byte) []byte
	// Logger gets one line per change of Redis's health and rate-limited
	// lines about lost uploads; default none.
	Logger *zap.Logger
}

// Tracker is the Redis side of one tracker on this instance: one
// go-redis client, one pub/sub connection (while something is
// subscribed), and the loops that publish, renew leases, end the
// uploads of lost instances and share bandwidth, each reaching Redis
// only while it has something to do (idle.go).
type Tracker struct {
	cfg    Config
	keys   keys
	client redis.UniversalClient
	// cluster is set on Redis Cluster, where a script touches one hash
	// slot, so one record per call (batch.go)
	cluster bool
	log     *zap.Logger
	stats   counters
	health  health

	lostLog ratelog.Gate // "upload lost" lines, at most one a second

	mu      sync.Mutex
	uploads map[string]*Upload // claimed on this instance, until their final document is published
	dirty   map[*Upload]struct{}
	share   *rateShare
	tick    uint64 // the publisher's ticks, under mu

	wake        chan struct{} // the publisher has work
	checkHealth chan struct{} // the health loop pings at once
	scanNow     chan struct{} // the scan loop scans at once (lease.go)
	stop        chan struct{}
	stopOnce    sync.Once
	loops       sync.WaitGroup

	subs *mux

	earlyWatches recentIDs // watches heard for IDs not registered here, under mu (watch.go)

	watchMu     sync.Mutex
	watchesSent recentIDs // when WatchDue last said due, by ID

	followingUntil atomic.Int64 // unix ns: the last Watch sent from here, plus WatchTTL (idle.go)

	listenMu   sync.Mutex      // the hold on the watch channel (idle.go)
	claiming   int             // claims under way, under listenMu
	watchSub   *Subscription   // the watch channel, while held
	watchReady <-chan struct{} // closed once Redis confirmed watchSub

	claimMu    sync.Mutex
	claimQueue []*claimRequest // claims waiting for the claimer
	claimWake  chan struct{}   // the claimer has work
}

// New connects a tracker to Redis and starts its loops. It waits at
// most 250ms for Redis (to load its scripts): if it cannot be reached,
// the tracker starts marked down and carries on locally until it can.
// A URL it cannot use is an error.
func New(cfg Config) (*Tracker, error) {
	if cfg.Tracker == "" {
		return nil, errors.New("redis tracker needs a tracker name")
	}
	if cfg.Instance == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		cfg.Instance = hex.EncodeToString(b[:])
	}
	if err := validateInstance(cfg.Instance); err != nil {
		return nil, err
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Retain <= 0 {
		cfg.Retain = DefaultRetain
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.WatchTTL <= 0 {
		cfg.WatchTTL = DefaultWatchTTL
	}
	if cfg.LostDoc == nil {
		cfg.LostDoc = DefaultLostDoc
	}
	if cfg.Summary == nil {
		cfg.Summary = func(doc []byte) []byte { return doc }
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	quietGoRedis(cfg.Logger)
	keys := newKeys(cfg.Tracker)
	client, err := newClient(cfg.URL, "upload_progress:"+keys.tracker)
	if err != nil {
		return nil, err
	}
	t := &Tracker{
		cfg:          cfg,
		keys:         keys,
		client:       client,
		log:          cfg.Logger.With(zap.String("tracker", cfg.Tracker), zap.String("instance", cfg.Instance)),
		uploads:      make(map[string]*Upload),
		dirty:        make(map[*Upload]struct{}),
		earlyWatches: newRecentIDs(maxEarlyWatches, earlyWatchLife),
		watchesSent:  newRecentIDs(maxWatchesSent, cfg.WatchTTL/2), // for WatchEvery
		wake:         make(chan struct{}, 1),
		checkHealth:  make(chan struct{}, 1),
		scanNow:      make(chan struct{}, 1),
		claimWake:    make(chan struct{}, 1),
		stop:         make(chan struct{}),
	}
	_, t.cluster = client.(*redis.ClusterClient)
	t.health.up.Store(true)
	t.health.since = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	_ = t.loadScripts(ctx) // if Redis is down, the health loop loads them when it is back
	cancel()
	t.subs = newMux(t)
	t.startLoops()
	return t, nil
}

// startLoops starts the tracker's background loops, each supervised.
func (t *Tracker) startLoops() {
	for name, loop := range map[string]func(){
		"publish": t.publishLoop, "renew": t.renewLoop, "scan": t.scanLoop, "health": t.healthLoop,
		"share": t.shareLoop, "resync": t.subs.resyncLoop, "claim": t.claimLoop,
	} {
		t.loops.Add(1)
		go t.supervise(name, loop)
	}
}

// loopRestartDelay is how long a loop that panicked waits before it
// runs again.
const loopRestartDelay = time.Second

// supervise runs loop until the tracker stops. A panic in it is
// recovered and logged with its stack, and the loop runs again after
// loopRestartDelay (so at most one such line a second per loop): the
// process never dies of it, and progress goes on being shared. The
// loops hold a lock only around reads and writes of fields, never
// around a call that could panic, so a loop starts again with no lock
// held.
func (t *Tracker) supervise(name string, loop func()) {
	defer t.loops.Done()
	for t.runRecovering(name, loop) {
		select {
		case <-t.stop:
			return
		case <-time.After(loopRestartDelay):
		}
	}
}

// runRecovering runs loop and reports whether it panicked.
func (t *Tracker) runRecovering(name string, loop func()) (panicked bool) {
	defer func() {
		if v := recover(); v != nil {
			panicked = true
			t.log.Error("a redis tracker loop panicked; it runs again in a second",
				zap.String("loop", name), zap.Any("panic", v), zap.Stack("stack"))
		}
	}()
	loop()
	return false
}

// Close sends what is left to publish (within a second), stops the
// loops and closes the connections. Uploads still in flight keep their
// claims until their lease expires.
func (t *Tracker) Close() error {
	t.flush()
	return t.shutdown()
}

// shutdown stops everything without flushing: what a crash leaves.
func (t *Tracker) shutdown() error {
	var err error
	t.stopOnce.Do(func() {
		close(t.stop)
		t.loops.Wait()
		t.subs.close()
		err = t.client.Close()
	})
	return err
}

// Health is Redis's health as this tracker sees it.
type Health struct {
	Up bool
	// LastError is the last error that marked Redis down; "" if none.
	LastError string
	// Since is when Up last changed (New counts).
	Since time.Time
}

// Health reports whether Redis answers, for the admin listing.
func (t *Tracker) Health() Health { return t.health.get() }

// Stats returns the tracker's counters, for the metrics.
func (t *Tracker) Stats() Stats { return t.stats.snapshot() }

// Instance is this instance's name.
func (t *Tracker) Instance() string { return t.cfg.Instance }

// usable says why a call on a request's path cannot use Redis now:
// ErrClosed after Close, ErrUnavailable while Redis is marked down.
func (t *Tracker) usable() error {
	select {
	case <-t.stop:
		return ErrClosed
	default:
	}
	if !t.health.up.Load() {
		return ErrUnavailable
	}
	return nil
}

// requestPathKey marks the context of a call on a request's path.
type requestPathKey struct{}

// requestContext bounds a call on a request's path by Config.Timeout.
func (t *Tracker) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithValue(ctx, requestPathKey{}, true), t.cfg.Timeout)
}

// startRequest begins a call on a request's path about one upload or
// group (kind "upload" or "group"): the ID must be valid and Redis
// usable; the call's context is bounded by Config.Timeout.
func (t *Tracker) startRequest(ctx context.Context, kind, id string) (context.Context, context.CancelFunc, error) {
	if err := validateID(kind, id); err != nil {
		return nil, nil, err
	}
	if err := t.usable(); err != nil {
		return nil, nil, err
	}
	ctx, cancel := t.requestContext(ctx)
	return ctx, cancel, nil
}

// pipeline sends the commands fill queues in one round trip (one per
// node on a cluster), counts it, and marks Redis down on a network
// error or timeout. If a script was missing from Redis's cache
// (NOSCRIPT: Redis restarted between two health checks), the scripts
// are loaded and fill runs again, so the caller's commands are the
// second run's; the scripts are written so that running one twice is
// harmless. The commands are returned in order, whatever their errors.
func (t *Tracker) pipeline(ctx context.Context, fill func(redis.Pipeliner)) ([]redis.Cmder, error) {
	cmds, err := t.exec(ctx, fill)
	if err == nil || !isReply(err) {
		return cmds, err
	}
	for _, c := range cmds {
		if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			if err := t.loadScripts(ctx); err != nil {
				return cmds, err
			}
			return t.exec(ctx, fill)
		}
	}
	return cmds, err
}

// exec is one round trip of pipeline.
func (t *Tracker) exec(ctx context.Context, fill func(redis.Pipeliner)) ([]redis.Cmder, error) {
	pipe := t.client.Pipeline()
	fill(pipe)
	t.stats.roundTrips.Add(1)
	cmds, err := pipe.Exec(ctx)
	if err != nil && err != redis.Nil {
		t.failedIn(ctx, err)
	}
	return cmds, err
}

// failedIn is failed for a round trip made with ctx. A call on a
// request's path that ran out of its Timeout does not mark Redis down
// itself: with many uploads starting at once on a busy machine, such
// calls time out while Redis answers. It has the health loop ping Redis
// now, which marks it down if it does not answer.
func (t *Tracker) failedIn(ctx context.Context, err error) {
	if ctx.Value(requestPathKey{}) != nil && isTimeout(err) {
		t.stats.errors.Add(1)
		select {
		case t.checkHealth <- struct{}{}:
		default:
		}
		return
	}
	t.failed(err)
}

// loadScripts loads every script into Redis's script cache (on a
// cluster, ScriptLoad goes to every shard).
func (t *Tracker) loadScripts(ctx context.Context) error {
	for _, src := range scriptSources {
		t.stats.roundTrips.Add(1)
		if err := t.client.ScriptLoad(ctx, src).Err(); err != nil {
			t.failed(err)
			return fmt.Errorf("loading a script into redis: %w", err)
		}
	}
	return nil
}

// failed counts a failed round trip and marks Redis down unless the
// error is Redis's own reply (a command error, not a lost connection).
func (t *Tracker) failed(err error) {
	select {
	case <-t.stop:
		return // closing: the client is closed under the last calls
	default:
	}
	t.stats.errors.Add(1)
	if !isReply(err) {
		t.health.down(err, t.log)
	}
}

// isTimeout reports whether err is a deadline or pool wait running out.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, redis.ErrPoolTimeout) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// isReply reports whether err is an error reply from Redis (or nil),
// not a failure to reach it.
func isReply(err error) bool {
	if err == nil || err == redis.Nil {
		return true
	}
	var re redis.Error
	return errors.As(err, &re) && !redis.HasErrorPrefix(err, "LOADING")
}
