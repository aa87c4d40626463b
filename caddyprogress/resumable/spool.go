package resumable

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// spools holds one spool per upload folder. Being a package-level
// UsagePool, a spool outlives config reloads: the new config's handlers
// take it before the old config's let go, so a delivery running or
// waiting to retry goes on, and is never started twice.
var spools = caddy.NewUsagePool()

// spool is an upload folder and what runs on it in this process: the
// uploads' live entries, the disk they reserve (max_disk), the
// background deliveries and the expiry sweeper (expire.go).
type spool struct {
	dir    string
	ctx    context.Context // ends background deliveries when no config uses the folder
	cancel context.CancelFunc
	wg     sync.WaitGroup // background goroutines

	mu       sync.Mutex
	entries  map[string]*entry
	reserved map[string]int64 // disk bytes each upload takes or will take
	total    int64            // the sum of reserved

	// route is how the latest request reached the handler: what a
	// background delivery is sent through (see deliver.go). routeSet is
	// closed once there is one.
	route    atomic.Pointer[route]
	routeMu  sync.Mutex
	routeSet chan struct{}

	// current is the newest Server using the folder: its expire applies.
	current atomic.Pointer[Server]
	started sync.Once
}

// route is a handler's way to the backend, taken from a request.
type route struct {
	srv    *Server           // the handler's config shapes the delivery
	next   caddyhttp.Handler // the route's next handler, usually reverse_proxy
	server *caddyhttp.Server // the Caddy server the request came in on
}

// loadSpool takes the spool of dir, made and scanned on first use.
func loadSpool(dir string) (*spool, error) {
	val, _, err := spools.LoadOrNew(dir, func() (caddy.Destructor, error) {
		return newSpool(dir)
	})
	if err != nil {
		return nil, err
	}
	return val.(*spool), nil
}

func newSpool(dir string) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the upload folder: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sp := &spool{
		dir:      dir,
		ctx:      ctx,
		cancel:   cancel,
		entries:  make(map[string]*entry),
		reserved: make(map[string]int64),
		routeSet: make(chan struct{}),
	}
	return sp, nil
}

// Destruct stops the background work once no config uses the folder;
// deliveries cut short stay "delivering" on disk and run again at the
// next start.
func (sp *spool) Destruct() error {
	sp.mu.Lock()
	sp.cancel() // under mu, so no delivery is scheduled after wg.Wait begins
	sp.mu.Unlock()
	sp.wg.Wait()
	return nil
}

// entry returns the live entry of an upload, made from its record.
func (sp *spool) entry(rec *record) *entry {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	e, ok := sp.entries[rec.ID]
	if !ok {
		e = newEntry(rec.ID, rec)
		sp.entries[rec.ID] = e
	}
	return e
}

// forget drops an upload's entry and its disk reservation.
func (sp *spool) forget(id string) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	delete(sp.entries, id)
	sp.total -= sp.reserved[id]
	delete(sp.reserved, id)
}

// errDiskFull means max_disk would be exceeded.
var errDiskFull = errors.New("the upload store is full")

// reserve sets the disk bytes upload id takes to n, unless that would
// make all uploads together take more than limit (0: no limit).
func (sp *spool) reserve(id string, n, limit int64) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	total := sp.total - sp.reserved[id] + n
	if limit > 0 && n > sp.reserved[id] && total > limit {
		return errDiskFull
	}
	sp.total = total
	sp.reserved[id] = n
	return nil
}

// reserveAtLeast grows what upload id reserves to n, unless that would
// exceed limit; a reservation of n or more is left as it is.
func (sp *spool) reserveAtLeast(id string, n, limit int64) error {
	sp.mu.Lock()
	held := sp.reserved[id]
	sp.mu.Unlock()
	if n <= held {
		return nil
	}
	return sp.reserve(id, n, limit)
}

// claim marks that a delivery of e runs (or will) in this process; it
// reports false if one already does.
func (sp *spool) claim(e *entry) bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if e.busy {
		return false
	}
	e.busy = true
	return true
}

// release ends claim.
func (sp *spool) release(e *entry) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	e.busy = false
}

// offerRoute keeps the way a request reached srv, for deliveries that
// run in the background.
func (sp *spool) offerRoute(rt route) {
	if rt.next == nil || rt.server == nil {
		return
	}
	sp.route.Store(&rt)
	sp.routeMu.Lock()
	defer sp.routeMu.Unlock()
	select {
	case <-sp.routeSet:
	default:
		close(sp.routeSet)
	}
}

// dropRoute forgets the route of a handler being cleaned up: its next
// handler goes with its config. Background deliveries wait for the next
// request to bring a new one.
func (sp *spool) dropRoute(srv *Server) {
	sp.routeMu.Lock()
	defer sp.routeMu.Unlock()
	if rt := sp.route.Load(); rt != nil && rt.srv == srv {
		sp.route.Store(nil)
		sp.routeSet = make(chan struct{})
	}
}

// awaitRoute returns the latest route, waiting for a request to bring
// one; nil if the spool stops first.
func (sp *spool) awaitRoute() *route {
	for {
		if rt := sp.route.Load(); rt != nil {
			return rt
		}
		sp.routeMu.Lock()
		set := sp.routeSet
		sp.routeMu.Unlock()
		select {
		case <-set:
		case <-sp.ctx.Done():
			return nil
		}
	}
}

// Interface guard
var _ caddy.Destructor = (*spool)(nil)
