package redistracker

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// Progress on demand: an upload's progress documents go to Redis only
// while another instance watches it. The claim stores the first
// document (so Lookup finds the upload anywhere), and the final one is
// always published; in between, an upload that nobody follows from
// another instance costs Redis nothing. Group members are always
// published (their group's hash is read by every group route).
//
// An instance that serves a status, report or event stream of an
// upload it does not run calls Watch (watchScript): the record's w
// field is set to now + WatchTTL, and when the upload is in flight its
// ID is published on the tracker's watch channel, which every instance
// follows on its pub/sub connection. The instance that runs it marks it
// watched for WatchTTL and sends its current document (SetCurrent) with
// the publisher's next batch; until the mark expires,
// its progress goes out as before, at most once per Interval. A claim
// of a record whose mark has not expired (an event stream that waited
// for the upload to start, or a watched reservation) publishes the ID
// too (putScript), so that upload is watched from its start. Watchers
// renew the mark (every half WatchTTL while they keep following).

// DefaultWatchTTL is how long one Watch keeps an upload watched.
const DefaultWatchTTL = 10 * time.Second

// maxWatchesSent bounds the IDs WatchDue remembers; past it, every call
// says due (more watches sent, none missed).
const maxWatchesSent = 10000

// maxEarlyWatches bounds the watches heard for IDs this instance has
// not registered (yet): the claim's own watch can arrive before the
// claim's answer. Past it, such watches are dropped (an upload claimed
// here then waits for the watcher's renewal).
const maxEarlyWatches = 10000

// earlyWatchLife is how long a watch heard before its upload was
// registered here counts for it.
const earlyWatchLife = 2 * time.Second

// Watched reports whether another instance watches the upload (or it is
// a group member): its progress documents are published.
func (u *Upload) Watched() bool {
	return u.group != "" || u.watchedUntil.Load() > time.Now().UnixNano()
}

// SetCurrent sets the function that reads the upload's current document
// (called on the tracker's goroutines: it must not block). A watch heard
// sends it at once; a lease renewal while nobody watches the upload
// stores it, unpublished, so that the record (and the "instance lost"
// document of an upload whose instance dies) is as old as the last
// renewal at most, not as old as the claim. Without it, the last
// document handed over serves.
func (u *Upload) SetCurrent(f func() (State, []byte)) { u.current.Store(&f) }

// currentDoc reads the upload's current document (see SetCurrent);
// false for a final one, which goes through Publish.
func (u *Upload) currentDoc() (State, []byte, bool) {
	var state State
	var doc []byte
	if f := u.current.Load(); f != nil {
		state, doc = (*f)()
	} else {
		u.mu.Lock()
		state, doc = u.state, u.doc
		u.mu.Unlock()
	}
	return state, doc, !state.Final()
}

// unsentDoc is what a lease renewal stores of u: its current document
// and its state's name when nobody watches it (those who do get every
// change published), or "" and nil.
func (u *Upload) unsentDoc() (state string, doc []byte) {
	if u.current.Load() == nil || u.Watched() {
		return "", nil
	}
	if st, doc, ok := u.currentDoc(); ok {
		return st.String(), doc
	}
	return "", nil
}

// watched marks u watched until the given time and sends its current
// document with the publisher's next batch.
func (u *Upload) watched(until time.Time) {
	u.watchedUntil.Store(until.UnixNano())
	if state, doc, ok := u.currentDoc(); ok {
		u.hand(state, doc, true)
	}
}

// WatchEvery is how often a follower renews its watch: every half
// WatchTTL, so that the mark never lapses while it follows.
func (t *Tracker) WatchEvery() time.Duration { return t.cfg.WatchTTL / 2 }

// WatchDue reports whether this instance should watch id now: true at
// most once per half WatchTTL per ID (so a poller renews the mark
// before it expires), and it records the call.
func (t *Tracker) WatchDue(id string) bool {
	now := time.Now()
	t.watchMu.Lock()
	defer t.watchMu.Unlock()
	if _, fresh := t.watchesSent.seen(id, now); fresh {
		return false
	}
	t.watchesSent.add(id, now) // when full, the ID is due again next time: more watches, none missed
	return true
}

// Watch tells the instance that runs the upload id (or will claim it
// within WatchTTL) that this one follows it: its progress documents are
// published for WatchTTL (see the top of this file). One round trip,
// within Timeout.
func (t *Tracker) Watch(ctx context.Context, id string) error {
	ctx, cancel, err := t.startRequest(ctx, "upload", id)
	if err != nil {
		return err
	}
	defer cancel()
	t.followingUntil.Store(time.Now().Add(t.cfg.WatchTTL).UnixNano()) // the scan runs meanwhile (idle.go)
	var cmd *redis.Cmd
	if _, err := t.pipeline(ctx, func(p redis.Pipeliner) {
		cmd = watchScript.EvalSha(ctx, p, []string{t.keys.record(id)},
			t.cfg.WatchTTL.Milliseconds(), id, t.keys.watch())
	}); err != nil || cmd.Err() != nil {
		return ErrUnavailable
	}
	return nil
}

// heardWatch handles a message of the watch channel: the upload, if it
// runs here, is watched from now on; a watch of an ID not registered
// here is kept a moment (most are of uploads on other instances, and
// expire unused).
func (t *Tracker) heardWatch(id string) {
	now := time.Now()
	t.mu.Lock()
	u := t.uploads[id]
	if u == nil {
		t.earlyWatches.add(id, now)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	u.watched(now.Add(t.cfg.WatchTTL))
}

// takeEarlyWatch marks u, being registered, watched if a watch of its
// ID was heard just before; under t.mu.
func (t *Tracker) takeEarlyWatch(u *Upload) {
	if heard, fresh := t.earlyWatches.seen(u.id, time.Now()); fresh {
		u.watchedUntil.Store(heard.Add(t.cfg.WatchTTL).UnixNano())
	}
	t.earlyWatches.forget(u.id)
}

// recentIDs remembers when each of at most max IDs was last added, for
// life. When full, it sweeps out the expired ones, at most once per
// half life (not for every add), and drops what still does not fit.
type recentIDs struct {
	at    map[string]time.Time
	max   int
	life  time.Duration
	swept time.Time
}

func newRecentIDs(max int, life time.Duration) recentIDs {
	return recentIDs{at: make(map[string]time.Time), max: max, life: life}
}

// seen returns when id was last added, and whether that is within life.
func (r *recentIDs) seen(id string, now time.Time) (time.Time, bool) {
	at, ok := r.at[id]
	return at, ok && now.Sub(at) < r.life
}

// add records id at now, unless the set is full of unexpired IDs.
func (r *recentIDs) add(id string, now time.Time) {
	if _, ok := r.at[id]; !ok && len(r.at) >= r.max {
		if now.Sub(r.swept) < r.life/2 {
			return
		}
		r.swept = now
		for other, at := range r.at {
			if now.Sub(at) >= r.life {
				delete(r.at, other)
			}
		}
		if len(r.at) >= r.max {
			return
		}
	}
	r.at[id] = now
}

func (r *recentIDs) forget(id string) { delete(r.at, id) }
