package redistracker

import (
	"context"
	"time"
)

// Idle costs nothing: a tracker with nothing in flight on this instance
// and nobody following from it makes no Redis round trip. Each loop
// that reaches Redis runs only while it has something to do:
//
//   - lease renewals and the publisher: while this instance has uploads
//     claimed (they send nothing otherwise);
//   - the scan for lost leases (lease.go): while this instance has
//     uploads in flight or follows one (a subscription, or a Watch in
//     the last WatchTTL), so that what it follows ends within the lease
//     when its instance is lost;
//   - the bandwidth share (share.go): while this instance has demand,
//     and once more when its demand falls to none; an idle instance's
//     first upload registers its demand in its claim's round trip;
//   - the health loop (health.go): while Redis is marked down, probing
//     for its return, and when a call on a request's path ran out of
//     its Timeout; while Redis is up, the other loops' round trips
//     notice a failure;
//   - the pub/sub connection (subscribe.go): open only while a channel
//     is subscribed (go-redis pings it every 3s without traffic): the
//     channels of local subscribers, and the tracker's watch channel
//     while this instance has uploads claimed or a claim under way.

// hasUploads reports whether this instance has uploads registered (in
// flight, or with a final document still to send).
func (t *Tracker) hasUploads() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.uploads) > 0
}

// following reports whether this instance follows uploads of others: a
// local subscriber, or a Watch within the last WatchTTL.
func (t *Tracker) following() bool {
	return t.subs.followers() || time.Now().UnixNano() < t.followingUntil.Load()
}

// busy reports whether the background loops have something to do.
func (t *Tracker) busy() bool { return t.hasUploads() || t.following() }

// listenForWatches holds the tracker's watch channel subscribed for a
// claim about to be made (see watch.go: the claim itself may publish a
// watch of its ID) and, from then on, for as long as this instance has
// uploads. While Redis is usable it waits, within ctx, for Redis to
// confirm the subscription, which is open already unless this instance
// was idle. The returned function ends the claim's hold.
func (t *Tracker) listenForWatches(ctx context.Context) (release func()) {
	t.listenMu.Lock()
	t.claiming++
	if t.watchSub == nil {
		if s, tp, err := t.subs.join(ctx, t.keys.watch(), "", ""); err == nil {
			t.watchSub, t.watchReady = s, tp.ready
		}
	}
	ready := t.watchReady
	t.listenMu.Unlock()
	release = func() {
		t.listenMu.Lock()
		t.claiming--
		t.listenMu.Unlock()
		t.stopListeningIfIdle()
	}
	if ready == nil || t.usable() != nil {
		return release
	}
	select {
	case <-ready:
	case <-ctx.Done():
	case <-t.stop:
	}
	return release
}

// stopListeningIfIdle lets the watch channel go once this instance has
// no upload and no claim under way (closing the pub/sub connection if
// nothing else is subscribed).
func (t *Tracker) stopListeningIfIdle() {
	t.listenMu.Lock()
	defer t.listenMu.Unlock()
	if t.watchSub == nil || t.claiming > 0 || t.hasUploads() {
		return
	}
	t.watchSub.Close()
	t.watchSub, t.watchReady = nil, nil
}
