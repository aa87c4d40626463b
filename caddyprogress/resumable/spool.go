package resumable

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/ratelog"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// spools holds one spool per store (keyed by Storage.Key). Being a package-level
// UsagePool, a spool outlives config reloads: the new config's handlers
// take it before the old config's let go, so a delivery running or
// waiting to retry goes on, and is never started twice.
var spools = caddy.NewUsagePool()

// spool is an upload store (a folder, a bucket) and what runs on it in
// this process: the uploads' live entries, the disk they reserve (max_disk), the
// background deliveries and the expiry sweeper (expire.go).
type spool struct {
	store  Storage         // the uploads and their records (storage.go)
	coord  Coordinator     // locks and delivery claims (coordinator.go)
	ctx    context.Context // ends background deliveries when no config uses the folder
	cancel context.CancelFunc
	wg     sync.WaitGroup // background goroutines

	mu      sync.Mutex
	entries map[string]*entry
	// budget counts the disk bytes each upload takes or will take
	// (disk.go): this process's own, or, once a handler with max_disk
	// uses the folder, the Coordinator's count for the store (shared).
	budget Budget
	shared bool

	// routes holds, for each handler with a delivery scheduled in the
	// background (needs counts them), how a request reached it: what the
	// delivery is sent through (see deliver.go), keyed by what a request
	// shows of the handler. Keys come from requests (their Host): only
	// those a delivery needs are kept, so the map is bounded by the
	// deliveries pending. routeAdded is closed (and replaced) when a
	// route is added while a delivery waits for one (waiting > 0).
	routeMu    sync.Mutex
	routes     map[routeKey]*route
	needs      map[routeKey]int
	routeAdded chan struct{}
	waiting    atomic.Int32

	// users are the Servers using the folder, with the config load
	// each belongs to: handlers of one load must agree on its settings.
	users map[*Server]any

	// sweepLog lets a sweep's failure to list the store be logged at
	// most once a second.
	sweepLog ratelog.Gate

	// current is the newest Server using the folder: its expire applies.
	current atomic.Pointer[Server]
	started sync.Once
}

// route is a handler's way to the backend, taken from a request.
type route struct {
	srv    *Server           // the handler's config shapes the delivery
	next   caddyhttp.Handler // the route's next handler, usually reverse_proxy
	server *caddyhttp.Server // the Caddy server the request came in on
	key    routeKey
}

// routeKey tells apart the handlers that may share a folder, as a
// request shows which one it reached: the Caddy server it came in on,
// and its host (the site). An upload is served, and delivered, only
// through a route with its creation's key (record.route), so a site
// never sends another site's upload to its own backend.
type routeKey struct {
	server string // the caddyhttp.Server's name; "" (a record from before) matches any
	host   string // lower case, port included
}

// accepts reports whether a request with this key may serve the upload
// of rec: one that reached the handler that accepted it.
func (k routeKey) accepts(rec *deliveryRecord) bool {
	want := rec.route()
	return (want.server == "" || want.server == k.server) && want.host == k.host
}

// loadSpool takes the spool of the store named key, made and scanned
// on first use, with the Storage open opens and the Coordinator newCoord
// makes (nil: the local one). A spool keeps the Storage and Coordinator
// it was made with across reloads, as it keeps the deliveries that hold
// its claims.
func loadSpool(key string, open func() (Storage, error), newCoord func() (Coordinator, error)) (*spool, error) {
	val, _, err := spools.LoadOrNew(key, func() (caddy.Destructor, error) {
		store, err := open()
		if err != nil {
			return nil, err
		}
		var coord Coordinator = newLocalCoordinator(store)
		if newCoord != nil {
			c, err := newCoord()
			if err != nil {
				_ = store.Close()
				return nil, err
			}
			coord = c
		}
		return newSpool(store, coord), nil
	})
	if err != nil {
		return nil, err
	}
	return val.(*spool), nil
}

func newSpool(store Storage, coord Coordinator) *spool {
	ctx, cancel := context.WithCancel(context.Background())
	return &spool{
		store:      store,
		coord:      coord,
		ctx:        ctx,
		cancel:     cancel,
		entries:    make(map[string]*entry),
		budget:     NewLocalBudget(),
		routes:     make(map[routeKey]*route),
		needs:      make(map[routeKey]int),
		routeAdded: make(chan struct{}),
		users:      make(map[*Server]any),
	}
}

// Destruct stops the background work once no config uses the folder;
// deliveries cut short stay "delivering" on disk and run again at the
// next start.
func (sp *spool) Destruct() error {
	sp.mu.Lock()
	sp.cancel() // under mu, so no delivery is scheduled after wg.Wait begins
	sp.mu.Unlock()
	sp.wg.Wait()
	return errors.Join(sp.coord.Close(), sp.store.Close())
}

// entry returns the live entry of an upload, made from its record.
func (sp *spool) entry(rec *deliveryRecord) *entry {
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
	delete(sp.entries, id)
	sp.mu.Unlock()
	sp.disk().Forget(id)
}

// errDiskFull means max_disk would be exceeded.
var errDiskFull = errors.New("the upload store is full")

// reserve sets the disk bytes upload id takes to n, unless that would
// make all uploads together take more than limit (0: no limit).
func (sp *spool) reserve(id string, n, limit int64) error {
	if !sp.disk().Reserve(id, n, limit) {
		return errDiskFull
	}
	return nil
}

// reserveAtLeast grows what upload id reserves to n, unless that would
// exceed limit; a reservation of n or more is left as it is.
func (sp *spool) reserveAtLeast(id string, n, limit int64) error {
	if !sp.disk().ReserveAtLeast(id, n, limit) {
		return errDiskFull
	}
	return nil
}

// storeKey names the spool's store where the uploads of several
// instances are counted together (max_disk): its folder or bucket.
func (sp *spool) storeKey() string { return sp.store.Key() }

// disk is the spool's Budget.
func (sp *spool) disk() Budget {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.budget
}

// shareBudgetLocked makes the spool count its uploads' disk in the
// Coordinator's Budget of its store, for max_disk across the instances
// that share it (with the local Coordinator, this process's count
// still). What this process reserved so far moves there, under mu, so
// that no reservation is made meanwhile. Done once, when the first
// handler with max_disk uses the folder: an instance without max_disk
// costs no round trip to count it.
func (sp *spool) shareBudgetLocked() {
	if sp.shared {
		return
	}
	sp.shared = true
	shared := sp.coord.Budget(sp.storeKey())
	if local, ok := sp.budget.(*localBudget); ok {
		for id, n := range local.reservations() {
			shared.ReserveAtLeast(id, n, 0)
		}
	}
	sp.budget = shared
}

// pruneReservations drops the reservations of uploads not in the store
// (seen lists those that are) made more than staleReservation ago: an
// instance died between reserving and creating one.
func (sp *spool) pruneReservations(seen map[string]bool) {
	sp.disk().Prune(func(id string) bool {
		if seen[id] {
			return true
		}
		_, err := sp.store.ReadRecord(sp.ctx, id) // made since the store was listed
		return !errors.Is(err, fs.ErrNotExist)
	}, staleReservation)
}

// errBusy means a delivery of the upload runs, or is scheduled, in
// this process.
var errBusy = errors.New("the upload is being delivered")

// claim marks that a delivery of e runs (or will) in this process, and
// claims it from the Coordinator, cluster-wide: errBusy if one already
// runs here, ErrClaimed if another instance holds it, another error if
// the claim cannot be decided (Redis down). The delivery runs in the
// claim's context (deliveryContext), which ends if the claim is lost.
func (sp *spool) claim(e *entry) error {
	sp.mu.Lock()
	if e.busy {
		sp.mu.Unlock()
		return errBusy
	}
	e.busy = true
	sp.mu.Unlock()
	lease, err := sp.coord.ClaimDelivery(sp.ctx, e.id)
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if err != nil {
		e.busy = false
		return err
	}
	e.lease = lease
	return nil
}

// release ends claim.
func (sp *spool) release(e *entry) {
	sp.mu.Lock()
	lease := e.lease
	e.busy, e.lease = false, nil
	sp.mu.Unlock()
	if lease != nil {
		lease.Release()
	}
}

// deliveryContext is the context a claimed delivery of e runs in: it
// ends when the spool stops or the claim is lost.
func (sp *spool) deliveryContext(e *entry) context.Context {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if e.lease == nil {
		return sp.ctx
	}
	return e.lease.Context()
}

// offerRoute keeps the way a request reached its handler, if a
// delivery of that handler's uploads is scheduled in the background.
func (sp *spool) offerRoute(rt route) {
	if rt.next == nil || rt.server == nil {
		return
	}
	sp.routeMu.Lock()
	defer sp.routeMu.Unlock()
	added := false
	// a record from before routes were kept needs its host's, on any server
	for _, key := range []routeKey{rt.key, {host: rt.key.host}} {
		if sp.needs[key] > 0 {
			sp.routes[key] = &rt
			added = true
		}
	}
	if added && sp.waiting.Load() > 0 {
		close(sp.routeAdded)
		sp.routeAdded = make(chan struct{})
	}
}

// needRoute counts the deliveries scheduled for the handler of key (by
// delta); its route is forgotten when none is left.
func (sp *spool) needRoute(key routeKey, delta int) {
	sp.routeMu.Lock()
	defer sp.routeMu.Unlock()
	sp.needs[key] += delta
	if sp.needs[key] <= 0 {
		delete(sp.needs, key)
		delete(sp.routes, key)
	}
}

// dropRoute forgets the routes of a handler being cleaned up: its next
// handler goes with its config. Background deliveries wait for a
// request to bring a new one.
func (sp *spool) dropRoute(srv *Server) {
	sp.routeMu.Lock()
	defer sp.routeMu.Unlock()
	for key, rt := range sp.routes {
		if rt.srv == srv {
			delete(sp.routes, key)
		}
	}
}

// awaitRoute returns the route of key, waiting for a request to bring
// one; nil if the spool stops first.
func (sp *spool) awaitRoute(key routeKey) *route {
	sp.waiting.Add(1) // before looking, so an offer after the look wakes us
	defer sp.waiting.Add(-1)
	for {
		sp.routeMu.Lock()
		rt := sp.routes[key]
		added := sp.routeAdded
		sp.routeMu.Unlock()
		if rt != nil {
			return rt
		}
		select {
		case <-added:
		case <-sp.ctx.Done():
			return nil
		}
	}
}

// join adds s to the Servers using the folder. Two handlers of one
// config load (load, any value that tells loads apart; nil for
// unknown) may share it only if both named it as their dir, with the
// same settings; a handler of another load (the config before a
// reload) may differ.
func (sp *spool) join(s *Server, load any) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for other, otherLoad := range sp.users {
		if load == nil || otherLoad != load {
			continue
		}
		if s.cfg.defaultDir || other.cfg.defaultDir {
			return fmt.Errorf("two handlers would share the default upload folder %q: "+
				"set dir in each resumable block (the same dir in both only to share it on purpose)", sp.store.Key())
		}
		if diff := s.cfg.differsFrom(&other.cfg); diff != "" {
			return fmt.Errorf("two resumable blocks on store %q differ in %s: "+
				"handlers that share a dir or bucket must have the same settings", sp.store.Key(), diff)
		}
	}
	sp.users[s] = load
	if s.cfg.MaxDisk > 0 {
		sp.shareBudgetLocked()
	}
	return nil
}

// leave removes s from the Servers using the folder.
func (sp *spool) leave(s *Server) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	delete(sp.users, s)
}

// Interface guard
var _ caddy.Destructor = (*spool)(nil)
