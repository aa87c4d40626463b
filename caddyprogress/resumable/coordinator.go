package resumable

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/tus/tusd/v2/pkg/filelocker"
	"github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/memorylocker"
)

// Coordinator is what keeps the instances that share an upload folder
// from acting on one upload at once: tusd's lock of each upload (one
// request at a time writes its bytes) and the claim of its delivery
// (one delivery at a time, cluster-wide). The Server holds one, chosen
// once when its folder is first used: the local one (file locks in the
// folder, claims in this process) or the one Options.NewCoordinator
// makes (package redislock, with the tracker's redis). No request path
// asks which it is.
type Coordinator interface {
	// Locker is tusd's locker of the uploads.
	Locker() handler.Locker
	// ClaimDelivery claims the delivery of upload id, for as long as the
	// returned Lease is held (its context ends if the claim is lost: the
	// delivery must stop). ErrClaimed if another holds it; any other
	// error when the claim cannot be decided (Redis down).
	ClaimDelivery(ctx context.Context, id string) (Lease, error)
	// Locked reports whether upload id's lock is held now, here or
	// elsewhere, without asking its holder to let go: the sweeper leaves
	// such an upload alone. An error when it cannot tell.
	Locked(ctx context.Context, id string) (bool, error)
	// Budget is the count of disk reservations (max_disk, budget.go) of
	// the uploads in store (a spool's storeKey), shared by the instances
	// that use this Coordinator on it.
	Budget(store string) Budget
	// Close lets go of what the Coordinator holds.
	Close() error
}

// Lease is a held delivery claim.
type Lease interface {
	// Context ends when the claim is released or lost.
	Context() context.Context
	// Release gives the claim up.
	Release()
}

// MayLockLocally reports whether the request of ctx may take upload
// id's lock in this process alone, when the Coordinator cannot reach
// where it keeps its locks (Redis down): the request that creates the
// upload (no one else knows its ID yet), when its body cannot complete
// it (a first part of known length, or a deferred length), so that it
// needs no delivery claim and its client gets the upload's URL. tus
// v1 creations only: an IETF-draft creation may complete the upload
// without saying its length.
func MayLockLocally(ctx context.Context, id string) bool {
	st, ok := ctx.Value(stateKey{}).(*requestState)
	if !ok || !st.creation || st.entry == nil || st.entry.id != id {
		return false
	}
	h := st.r.Header
	if h.Get("Upload-Draft-Interop-Version") != "" {
		return false
	}
	if h.Get("Upload-Defer-Length") == "1" {
		return true
	}
	size, err := strconv.ParseInt(h.Get("Upload-Length"), 10, 64)
	return err == nil && st.r.ContentLength >= 0 && st.r.ContentLength < size
}

// ErrClaimed means another instance holds an upload's delivery claim.
var ErrClaimed = errors.New("the upload's delivery is claimed by another instance")

// localCoordinator is the Coordinator of a store that one process
// uses: tusd's file locks in the folder (in this process's memory for a
// store without one, a bucket), and delivery claims that this process
// alone takes (the spool's busy flag keeps them single).
type localCoordinator struct {
	dir    string                     // the folder of a fileStorage
	memory *memorylocker.MemoryLocker // the locks of another store
}

func newLocalCoordinator(store Storage) localCoordinator {
	if fs, ok := store.(*fileStorage); ok {
		return localCoordinator{dir: fs.dir}
	}
	return localCoordinator{memory: memorylocker.New()}
}

// Locker asks the holder of a lock another request wants to let go
// (a client resuming before the proxy noticed its old connection is
// gone); these polls make that take about a second, not tusd's 7.
func (c localCoordinator) Locker() handler.Locker {
	if c.memory != nil {
		return c.memory // asks the holder at once
	}
	locker := filelocker.New(c.dir)
	locker.HolderPollInterval = time.Second
	locker.AcquirerPollInterval = 200 * time.Millisecond
	return locker
}

func (localCoordinator) ClaimDelivery(ctx context.Context, _ string) (Lease, error) {
	ctx, cancel := context.WithCancel(ctx)
	return localLease{ctx: ctx, cancel: cancel}, nil
}

// Locked is false: in one process, the spool's own count of requests
// in progress tells the sweeper the same (inRequest).
func (localCoordinator) Locked(context.Context, string) (bool, error) { return false, nil }

// Budget is this process's count: one process uses the folder.
func (localCoordinator) Budget(string) Budget { return NewLocalBudget() }

func (localCoordinator) Close() error { return nil }

type localLease struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func (l localLease) Context() context.Context { return l.ctx }
func (l localLease) Release()                 { l.cancel() }

// Interface guards
var (
	_ Coordinator = localCoordinator{}
	_ Lease       = localLease{}
)
