package redislock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tus/tusd/v2/pkg/handler"
	"go.uber.org/zap"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/redistracker"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/resumable"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/ratelog"
)

// Defaults for the Config's fields.
const (
	DefaultLease   = 5 * time.Second
	DefaultTimeout = time.Second
	DefaultLinger  = 10 * time.Second
)

// pollInterval is how often a request waiting for a held lock tries
// again, and asks its holder again to let go.
const pollInterval = 200 * time.Millisecond

// Config is what a Coordinator needs.
type Config struct {
	// Client is the tracker's Redis; Close closes it.
	Client redis.UniversalClient
	// Tracker names the keys (see the package doc).
	Tracker string
	// Logger gets what goes wrong: lost leases, at most a line a second.
	Logger *zap.Logger
	// Lease is how long a lock or claim outlives its holder's last
	// renewal. Default: 5s.
	Lease time.Duration
	// Timeout bounds each Redis call. Default: 1s.
	Timeout time.Duration
	// Linger is how long the subscription to release requests stays
	// open once this instance holds no lock, so that a client's PATCHes
	// in a row do not each pay a SUBSCRIBE. Default: 10s.
	Linger time.Duration
}

// Coordinator is a resumable.Coordinator over Redis.
type Coordinator struct {
	cfg    Config
	keys   keys
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	lostLog  ratelog.Gate // the lines of lost leases, at most one a second
	downLog  ratelog.Gate // the lines of locks refused while Redis fails, at most one a second
	freshLog ratelog.Gate // the lines of a Redis restarted empty, at most one a second

	renewFailed atomic.Bool // the last renewal failed for a Redis error

	mu    sync.Mutex
	held  map[*lease]struct{}
	locks int           // how many of held are locks
	sub   *subscription // open while a lock is held, and for Linger after; nil else
}

// subscription is one subscription to release requests, and the
// goroutine that listens on it (listen).
type subscription struct {
	changed chan struct{} // the count of held locks changed (buffered 1)
}

// wake tells sub's goroutine that the count of held locks changed.
func (sub *subscription) wake() {
	select {
	case sub.changed <- struct{}{}:
	default:
	}
}

// lease is a lock or a claim this instance holds.
type lease struct {
	id, key, token string
	lock           bool      // a lock (release requests reach it), not a claim
	deadline       time.Time // until when it is surely ours; guarded by mu
	lost           func()    // called once, if it is lost or (a lock) wanted elsewhere
	once           sync.Once
}

// Dial makes a Coordinator on the Redis a URL names (the forms of
// package redistracker, whose parser it uses), for cfg without Client.
func Dial(rawURL string, cfg Config) (*Coordinator, error) {
	client, err := redistracker.NewClient(rawURL, "caddy-upload-progress-resumable")
	if err != nil {
		return nil, err
	}
	cfg.Client = client
	return New(cfg), nil
}

// New starts a Coordinator and its renewal loop (the subscription to
// release requests opens when it holds a lock). Close it when its folder
// is no longer used.
func New(cfg Config) *Coordinator {
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Linger <= 0 {
		cfg.Linger = DefaultLinger
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Coordinator{cfg: cfg, keys: newKeys(cfg.Tracker), ctx: ctx, cancel: cancel, held: make(map[*lease]struct{})}
	c.markKnown()
	c.wg.Add(1)
	go c.renewLoop()
	return c
}

// Close stops the loops and the subscription, and closes the client;
// what is held is left to expire with its lease.
func (c *Coordinator) Close() error {
	c.mu.Lock()
	c.cancel() // under mu: no subscription starts after it (see hold)
	c.mu.Unlock()
	c.wg.Wait()
	return c.cfg.Client.Close()
}

// safely runs one step of a loop of the Coordinator: a panic is logged
// with its stack, and the loop goes on.
func (c *Coordinator) safely(what string, step func()) {
	defer func() {
		if v := recover(); v != nil {
			c.cfg.Logger.Error(what+" panicked", zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
		}
	}()
	step()
}

// Locker is tusd's Locker over Redis.
func (c *Coordinator) Locker() handler.Locker { return locker{c} }

type locker struct{ c *Coordinator }

func (l locker) NewLock(id string) (handler.Lock, error) { return &lock{c: l.c, id: id}, nil }

// errJustRestarted is the error of a claim whose context ended while
// Redis had restarted empty a moment ago (see acquire).
var errJustRestarted = errors.New("redis restarted empty less than a lease ago")

// errLockUnavailable is tusd's answer to a request whose upload's lock
// cannot be taken because Redis does not answer: 503 with Retry-After
// (tus clients retry), a JSON error without Redis's own.
var errLockUnavailable = handler.Error{
	ErrorCode: "ERR_LOCK_UNAVAILABLE",
	Message:   "the upload's lock cannot be taken now; try again shortly",
	HTTPResponse: handler.HTTPResponse{
		StatusCode: http.StatusServiceUnavailable,
		Body:       `{"error":"the upload's lock cannot be taken now; try again shortly"}` + "\n",
		Header:     handler.HTTPHeader{"Content-Type": "application/json", "Cache-Control": "no-store", "Retry-After": "1"},
	},
}

// lock is one request's lock of an upload.
type lock struct {
	c    *Coordinator
	id   string
	held *lease
}

// Lock takes the upload's lock, asking its holder to let go meanwhile
// (see the package doc); handler.ErrLockTimeout once ctx ends.
func (l *lock) Lock(ctx context.Context, requestRelease func()) error {
	key, token := l.c.keys.lock(l.id), newToken()
	for {
		start := time.Now()
		ok, fresh, err := l.c.acquire(ctx, key, token)
		if ctx.Err() != nil {
			if ok {
				l.c.remove(key, token)
			}
			return handler.ErrLockTimeout
		}
		if err != nil {
			if resumable.MayLockLocally(ctx, l.id) {
				// a creation's ID is known to nobody else yet: its lock is
				// this process's until Redis answers, then set there (renew)
				l.held = l.c.hold(&lease{id: l.id, key: key, token: token, lock: true, lost: requestRelease}, start)
				return nil
			}
			if l.c.downLog.Allow() {
				l.c.cfg.Logger.Warn("redis did not answer; the upload's lock is refused with 503 until it does",
					zap.String("id", l.id), zap.Error(err))
			}
			return errLockUnavailable
		}
		if fresh && !resumable.MayLockLocally(ctx, l.id) {
			// Redis restarted empty a moment ago: a request of before may
			// still hold this lock, and set it again within the lease;
			// wait, without asking anyone to let go
			if ok {
				l.c.remove(key, token)
			}
		} else if ok {
			l.held = l.c.hold(&lease{id: l.id, key: key, token: token, lock: true, lost: requestRelease}, start)
			return nil
		} else {
			l.c.askRelease(ctx, l.id)
		}
		select {
		case <-ctx.Done():
			return handler.ErrLockTimeout
		case <-time.After(pollInterval):
		}
	}
}

// Unlock lets the lock go.
func (l *lock) Unlock() error {
	if l.held == nil {
		return nil
	}
	l.c.drop(l.held)
	l.held = nil
	return nil
}

// ClaimDelivery claims the delivery of upload id: resumable.ErrClaimed
// if another holds it. For a lease after Redis restarted empty, it waits
// (see acquire).
func (c *Coordinator) ClaimDelivery(ctx context.Context, id string) (resumable.Lease, error) {
	key, token := c.keys.delivery(id), newToken()
	start := time.Now()
	ok, fresh, err := c.acquire(ctx, key, token)
	for err == nil && fresh {
		// Redis restarted empty a moment ago: a delivery of before may
		// still run, and find its claim gone within the lease; wait
		if ok {
			c.remove(key, token)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("claiming the delivery of upload %s in redis: %w", id, errJustRestarted)
		case <-time.After(pollInterval):
		}
		start = time.Now()
		ok, fresh, err = c.acquire(ctx, key, token)
	}
	if err != nil {
		return nil, fmt.Errorf("claiming the delivery of upload %s in redis: %w", id, err)
	}
	if !ok {
		return nil, resumable.ErrClaimed
	}
	cctx, cancel := context.WithCancel(ctx)
	l := c.hold(&lease{id: id, key: key, token: token, lost: cancel}, start)
	return &claim{c: c, l: l, ctx: cctx, cancel: cancel}, nil
}

type claim struct {
	c      *Coordinator
	l      *lease
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once
}

func (cl *claim) Context() context.Context { return cl.ctx }

func (cl *claim) Release() {
	cl.once.Do(func() {
		cl.cancel()
		cl.c.drop(cl.l)
	})
}

// Locked reports whether upload id's lock is held, by any instance.
func (c *Coordinator) Locked(ctx context.Context, id string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	n, err := c.cfg.Client.Exists(ctx, c.keys.lock(id)).Result()
	return n > 0, err
}

// acquire sets key to token with the lease, if no one holds it (ok).
// In the same round trip it marks Redis as known to this tracker (the
// alive key, set once): fresh reports that Redis did not know it a lease
// ago, so it lost what it held (restarted empty) a moment ago, and the
// holders of before may not have set their locks and claims again yet.
func (c *Coordinator) acquire(ctx context.Context, key, token string) (ok, fresh bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	now := time.Now()
	var set *redis.BoolCmd
	var mark *redis.StatusCmd
	_, err = c.cfg.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
		set = p.SetNX(ctx, key, token, c.cfg.Lease)
		mark = p.SetArgs(ctx, c.keys.alive(), now.UnixMilli(), redis.SetArgs{Mode: "NX", Get: true})
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, false, err
	}
	if err := set.Err(); err != nil {
		return false, false, err
	}
	known := time.UnixMilli(0) // set at the Coordinator's start: no restart since
	switch since, err := mark.Result(); {
	case errors.Is(err, redis.Nil):
		known = now // this call marked it
	case err != nil:
		return false, false, err
	default:
		if ms, err := strconv.ParseInt(since, 10, 64); err == nil {
			known = time.UnixMilli(ms)
		}
	}
	fresh = now.Before(known.Add(c.cfg.Lease))
	if fresh && c.freshLog.Allow() {
		c.cfg.Logger.Warn("redis restarted empty a moment ago: no lock or claim is granted for a lease, "+
			"while their holders of before set them again", zap.Duration("lease", c.cfg.Lease))
	}
	return set.Val(), fresh, nil
}

// markKnown marks Redis as known to this tracker, from the start: a
// Redis that does not know it later lost what it held (see acquire).
func (c *Coordinator) markKnown() {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.Timeout)
	defer cancel()
	_ = c.cfg.Client.SetNX(ctx, c.keys.alive(), 0, 0).Err()
}

// hold counts l as held, surely until a lease after start.
func (c *Coordinator) hold(l *lease, start time.Time) *lease {
	c.mu.Lock()
	defer c.mu.Unlock()
	l.deadline = start.Add(c.cfg.Lease)
	c.held[l] = struct{}{}
	if l.lock {
		c.locks++
		switch {
		case c.sub != nil:
			c.sub.wake()
		case c.ctx.Err() == nil: // not closed (Close cancels under mu)
			c.sub = &subscription{changed: make(chan struct{}, 1)}
			c.wg.Add(1)
			go c.listen(c.sub)
		}
	}
	return l
}

// forget stops holding l; c.mu is held.
func (c *Coordinator) forget(l *lease) {
	if _, ok := c.held[l]; !ok {
		return
	}
	delete(c.held, l)
	if l.lock {
		c.locks--
		if c.locks == 0 && c.sub != nil {
			c.sub.wake()
		}
	}
}

// drop stops holding l and deletes its key if it is still l's.
func (c *Coordinator) drop(l *lease) {
	c.mu.Lock()
	c.forget(l)
	c.mu.Unlock()
	c.remove(l.key, l.token)
}

// remove deletes key if it holds token (a lease that ended meanwhile
// may be another's by now).
func (c *Coordinator) remove(key, token string) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	if err := removeScript.Run(ctx, c.cfg.Client, []string{key}, token).Err(); err != nil {
		c.cfg.Logger.Debug("releasing a lease in redis; it ends with its TTL", zap.String("key", key), zap.Error(err))
	}
}

// askRelease asks the holder of upload id's lock to let go.
func (c *Coordinator) askRelease(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	_ = c.cfg.Client.Publish(ctx, c.keys.release(), id).Err()
}

// listen subscribes to release requests and passes each to the holder
// of the lock it names, while this instance holds a lock and for
// Config.Linger after the last one went; then it closes the
// subscription (go-redis's health-check PINGs stop with it), and the
// next lock held opens a new one. A request sent before the
// subscription is complete is not lost: its sender publishes it again
// every poll (200ms) until it gets the lock.
func (c *Coordinator) listen(sub *subscription) {
	defer c.wg.Done()
	defer func() {
		if v := recover(); v != nil {
			c.cfg.Logger.Error("listening for release requests panicked",
				zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
			c.mu.Lock()
			if c.sub == sub {
				c.sub = nil // the next lock held subscribes again
			}
			c.mu.Unlock()
		}
	}()
	pubsub := c.cfg.Client.Subscribe(c.ctx, c.keys.release())
	msgs := pubsub.Channel()
	defer func() {
		_ = pubsub.Close()
		for range msgs { // until go-redis's receiving goroutine ends
		}
	}()
	linger := time.NewTimer(c.cfg.Linger)
	linger.Stop()
	defer linger.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case msg, ok := <-msgs:
			if !ok {
				return
			}
			c.safely("passing on a release request", func() { c.passOn(msg.Payload) })
		case <-sub.changed:
			c.mu.Lock()
			idle := c.locks == 0
			c.mu.Unlock()
			if idle {
				linger.Reset(c.cfg.Linger)
			} else {
				linger.Stop()
			}
		case <-linger.C:
			c.mu.Lock()
			idle := c.locks == 0
			if idle {
				c.sub = nil // the next lock held subscribes again
			}
			c.mu.Unlock()
			if idle {
				return
			}
		}
	}
}

// passOn asks the holders of upload id's lock here to let go.
func (c *Coordinator) passOn(id string) {
	c.mu.Lock()
	var wanted []*lease
	for l := range c.held {
		if l.lock && l.id == id {
			wanted = append(wanted, l)
		}
	}
	c.mu.Unlock()
	for _, l := range wanted {
		c.signal(l, "")
	}
}

// signal calls l's lost function once (tusd's requestRelease, or the
// claim's cancel); why, if set, is logged.
func (c *Coordinator) signal(l *lease, why string) {
	l.once.Do(func() {
		if why != "" && c.lostLog.Allow() {
			c.cfg.Logger.Warn(why, zap.String("id", l.id), zap.String("key", l.key))
		}
		defer func() {
			if v := recover(); v != nil {
				c.cfg.Logger.Error("releasing a lease panicked", zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
			}
		}()
		l.lost()
	})
}

// renewLoop renews every held lease every third of the lease, or every
// poll while renewals fail, so that locks kept while Redis was down are
// set there again soon after it answers, well within the lease in which
// it grants nothing new (see acquire).
func (c *Coordinator) renewLoop() {
	defer c.wg.Done()
	for {
		wait := c.cfg.Lease / 3
		if c.renewFailed.Load() {
			wait = min(wait, pollInterval)
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(wait):
			c.safely("renewing leases", c.renew)
		}
	}
}

// renew renews the held leases in one pipeline; a lease that is no
// longer ours, or that could not be renewed before its deadline, is lost.
func (c *Coordinator) renew() {
	c.mu.Lock()
	leases := make([]*lease, 0, len(c.held))
	for l := range c.held {
		leases = append(leases, l)
	}
	c.mu.Unlock()
	failed := false
	defer func() { c.renewFailed.Store(failed) }()
	if len(leases) == 0 {
		return
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.Timeout)
	defer cancel()
	cmds := make([]*redis.Cmd, len(leases))
	_, _ = c.cfg.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, l := range leases {
			script := renewScript
			if l.lock {
				script = renewLockScript
			}
			cmds[i] = script.Eval(ctx, p, // EVAL: a pipeline cannot fall back from EVALSHA
				[]string{l.key}, l.token, c.cfg.Lease.Milliseconds())
		}
		return nil
	})
	for i, l := range leases {
		n, err := cmds[i].Int()
		failed = failed || err != nil
		if err == nil && n == reasserted && c.lostLog.Allow() {
			c.cfg.Logger.Info("redis answers again; a lock held meanwhile is set there again",
				zap.String("id", l.id), zap.String("key", l.key))
		}
		if c.renewed(l, start, err == nil && n != notOurs, err != nil) {
			continue
		}
		c.signal(l, "lost a lease in redis; letting go")
	}
}

// renewed records how l's renewal went: ok, or failed for a Redis
// error (errored) or because the key is no longer l's. It reports false
// when l is lost: not ours, or not renewed in time to be surely ours
// until the next renewal.
func (c *Coordinator) renewed(l *lease, start time.Time, ok, errored bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, held := c.held[l]; !held {
		return true // let go meanwhile
	}
	if ok {
		l.deadline = start.Add(c.cfg.Lease)
		return true
	}
	// a lock whose renewal failed for a Redis error is kept: while Redis
	// does not answer, no other instance can take it, and its request
	// goes on; the renewal that reaches Redis again sets it there again,
	// or finds it another's and lets go (see the package doc)
	if errored && l.lock {
		return true
	}
	// a claim's renewal that failed for a Redis error is tried again at
	// the next tick, unless that would be past the lease: then it counts
	// as lost now, a tick before the key may expire and another take it
	if errored && time.Now().Add(c.cfg.Lease/3).Before(l.deadline) {
		return true
	}
	c.forget(l)
	return false
}

// removeScript deletes KEYS[1] if it holds ARGV[1].
var removeScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// The answers of the renewal scripts.
const (
	notOurs    = 0 // the key is another's (or, for a claim, gone)
	renewedKey = 1
	reasserted = 2 // a lock's key was gone, and is set again
)

// renewScript sets KEYS[1]'s TTL to ARGV[2] ms if it holds ARGV[1].
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)

// renewLockScript is renewScript for a lock, which also sets KEYS[1]
// again if it is gone: the lock was kept while Redis did not answer
// (or taken then, for a creation), and Redis lost it meanwhile
// (restarted empty, or its lease ran out).
var renewLockScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0`)

// newToken is a random token that tells one holder from another.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Interface guards
var (
	_ resumable.Coordinator = (*Coordinator)(nil)
	_ resumable.Lease       = (*claim)(nil)
	_ handler.Locker        = locker{}
	_ handler.Lock          = (*lock)(nil)
)
