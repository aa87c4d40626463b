package caddyprogress

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"golang.org/x/time/rate"
)

// newUploadStore is the handler's store of uploads, chosen once at
// provision: its tracker, decorated with the other instances when the
// tracker is shared through redis (provisionShared, before).
func (h *Handler) newUploadStore() uploadStore {
	local := localStore{h.tracker}
	if h.shared == nil {
		return local
	}
	return &sharedStore{local: local, entry: h.shared, c: h.shared.c, interval: time.Duration(h.Interval)}
}

// sharedStore is the uploadStore of a tracker shared through redis: an
// upload starts, is reserved and ends in this instance's tracker and,
// through the shared backend (sharedbackend.go), across the instances;
// a read takes this instance's tracker first, then the shared backend
// for what it does not hold, or holds only as a reservation. An upload on another instance is watched while a route
// shows it, so that its instance publishes its progress (a lookup, then
// pub/sub: one connection per tracker and instance, whatever the
// number of streams).
type sharedStore struct {
	local    localStore
	entry    *sharedEntry // the tracker's shared side (sharedtracker.go)
	c        sharedBackend
	interval time.Duration // how long a status read waits for a watched upload's document
}

// start starts the upload here, then claims it across the instances.
func (s *sharedStore) start(ctx context.Context, id, group string, total int64, lim startLimits, prepare func(*upload)) (*upload, error) {
	u, err := s.local.start(ctx, id, group, total, lim, prepare)
	if err != nil {
		return nil, err
	}
	if err := s.entry.claim(ctx, s.local.t, u, group); err != nil {
		return nil, err
	}
	return u, nil
}

// reserve reserves the ID here, then across the instances.
func (s *sharedStore) reserve(ctx context.Context, retain time.Duration, maxUploads, maxReservations int) (*upload, error) {
	u, err := s.local.reserve(ctx, retain, maxUploads, maxReservations)
	if err != nil {
		return nil, err
	}
	if err := s.entry.reserve(ctx, s.local.t, u); err != nil {
		return nil, err
	}
	return u, nil
}

// ended publishes the upload's final document.
func (s *sharedStore) ended(u *upload) { publishFinal(u) }

// shareRate has the shared backend share total among the instances.
func (s *sharedStore) shareRate(total rate.Limit, limiter *rate.Limiter) {
	s.c.shareRate(total, limiter, s.local.t.uploadingCount)
}

func (s *sharedStore) lookup(ctx context.Context, id string, current bool) record {
	rec := s.local.lookup(ctx, id, current)
	if rec.started() {
		return rec
	}
	d, err := s.c.lookup(ctx, id)
	if err != nil || (rec.live != nil && d.state == progress.StatePending) {
		return rec
	}
	if current && !d.state.Final() && s.c.watchDue(id) {
		d = s.currentDoc(ctx, id, d)
	}
	doc, upstream, err := docFromJSON(d.json)
	if err != nil {
		return rec
	}
	return record{doc: doc, upstream: upstream}
}

// currentDoc watches id, whose stored document is d, and returns the
// document its instance sends in answer, or d if none comes within an
// interval (a reservation's is not waited for: nothing runs yet). It is
// how a status read shows the progress as of now the first time in a
// watch period, not the document a claim stored.
func (s *sharedStore) currentDoc(ctx context.Context, id string, d sharedDoc) sharedDoc {
	if d.state == progress.StatePending {
		_ = s.c.watch(ctx, id)
		return d
	}
	sub, err := s.c.subscribe(ctx, id, false) // before the watch: its answer is not missed
	if err != nil {
		return d
	}
	defer sub.close()
	if s.c.watch(ctx, id) != nil {
		return d
	}
	timer := time.NewTimer(s.interval)
	defer timer.Stop()
	for {
		select {
		case <-sub.notify():
			if n, ok := newest(sub.take(), d.seq); ok {
				return n
			}
		case <-timer.C:
			return d
		case <-ctx.Done():
			return d
		}
	}
}

// newest returns the document of docs with the highest sequence number
// above after, preferring a final one; false if there is none.
func newest(docs []sharedDoc, after int64) (sharedDoc, bool) {
	var latest sharedDoc
	found := false
	for _, d := range docs {
		if d.seq <= after || d.state == progress.StatePending {
			continue
		}
		if d.state.Final() {
			return d, true
		}
		if !found || d.seq > latest.seq {
			latest, found = d, true
		}
	}
	return latest, found
}

// follow follows id here if it started here; else through the shared
// store (subscribed first, then watched, then looked up), switching to
// this instance's record if it starts here before another instance's
// document was sent. Without the shared backend, it waits for a local
// start as without redis.
func (s *sharedStore) follow(id string) uploadFollow {
	local := s.local.t.follow(id)
	if !local.waiting() {
		return local
	}
	ctx := context.Background()
	sub, err := s.c.subscribe(ctx, id, false)
	if err != nil {
		return local
	}
	// watched while the stream lasts, so that its instance (or the one
	// that claims it, if it has not started) publishes its progress
	_ = s.c.watch(ctx, id)
	f := &sharedFollow{src: s, id: id, local: local, sub: sub, rewatchAt: time.Now().Add(s.c.watchEvery())}
	if d, err := s.c.lookup(ctx, id); err == nil && d.state != progress.StatePending {
		f.first = &d
	}
	return f
}

// sharedFollow follows an upload of another instance through the
// shared store: the documents its instance publishes, dropped when
// already seen (by sequence number); progress at most once per
// interval (the uploading instance publishes no more often), one final
// document.
type sharedFollow struct {
	src       *sharedStore
	id        string
	local     *trackerFollow // waiting for a start here
	onLocal   bool           // it started here: local is followed
	sub       sharedSubscription
	first     *sharedDoc // the lookup's, not given yet
	lastSeq   int64
	sentAny   bool
	rewatchAt time.Time
}

func (f *sharedFollow) next() (*statusDoc, followState) {
	if !f.sentAny && !f.onLocal && f.local.waiting() {
		if d, where := f.local.next(); where == following { // it started here after all
			f.onLocal = true
			f.sub.close()
			return d, where
		}
	}
	if f.onLocal {
		return f.local.next()
	}
	docs := f.sub.take()
	if f.first != nil {
		docs = append([]sharedDoc{*f.first}, docs...)
		f.first = nil
	}
	d, ok := newest(docs, f.lastSeq)
	if now := time.Now(); now.After(f.rewatchAt) {
		f.rewatchAt = now.Add(f.src.c.watchEvery())
		ctx := context.Background()
		_ = f.src.c.watch(ctx, f.id)
		// a final document published while the watch had lapsed (Redis
		// did not answer it) went to nobody: read it
		if l, err := f.src.c.lookup(ctx, f.id); err == nil && l.state.Final() && l.seq > f.lastSeq {
			d, ok = l, true
		}
	}
	if ok {
		if doc, _, err := docFromJSON(d.json); err == nil {
			f.lastSeq, f.sentAny = d.seq, true
			return doc, following
		}
	}
	if f.sentAny {
		return nil, following
	}
	return nil, awaitingStart
}

func (f *sharedFollow) changed() <-chan struct{} {
	if f.onLocal {
		return f.local.changed()
	}
	return f.sub.notify()
}

func (f *sharedFollow) close() {
	if !f.onLocal {
		f.sub.close()
	}
	f.local.close()
}

func (s *sharedStore) groupMembers(ctx context.Context, group string, now time.Time) ([]*statusDoc, uint64) {
	docs, err := s.c.lookupGroup(ctx, group)
	if err != nil {
		return s.local.groupMembers(ctx, group, now)
	}
	return s.withOthers(group, now, byID(docs))
}

// withOthers is the tracker's members of the group completed with the
// members on other instances: others holds their latest documents by
// ID. A member known here is shown as known here.
func (s *sharedStore) withOthers(group string, now time.Time, others map[string]sharedDoc) ([]*statusDoc, uint64) {
	members, lastJoin := s.local.t.groupMembers(group, now)
	here := make(map[string]bool, len(members))
	for _, d := range members {
		here[d.id] = true
	}
	added := false
	for id, sd := range others {
		if here[id] {
			continue
		}
		doc, _, err := docFromJSON(sd.json)
		if err != nil {
			continue
		}
		doc.id = id
		members = append(members, doc)
		added = true
	}
	if added {
		slices.SortFunc(members, func(a, b *statusDoc) int {
			return cmp.Or(cmp.Compare(a.summary.startedAt, b.summary.startedAt), cmp.Compare(a.id, b.id))
		})
	}
	return members, lastJoin + uint64(len(others))
}

func byID(docs []sharedDoc) map[string]sharedDoc {
	m := make(map[string]sharedDoc, len(docs))
	for _, d := range docs {
		m[d.id] = d
	}
	return m
}

// followGroup follows the group's members here and, through pub/sub,
// on other instances; if it cannot subscribe, they are looked up at
// each look instead.
func (s *sharedStore) followGroup(group string) groupFollow {
	ctx := context.Background()
	sub, err := s.c.subscribe(ctx, group, true)
	if err != nil {
		return sharedGroup{s: s, group: group}
	}
	others := make(map[string]sharedDoc)
	if docs, err := s.c.lookupGroup(ctx, group); err == nil {
		others = byID(docs)
	}
	return sharedGroup{s: s, group: group, sub: sub, others: others}
}

// sharedGroup is what a group stream reads its members from with
// redis: the tracker, and the documents of members on other instances,
// kept up to date through pub/sub.
type sharedGroup struct {
	s      *sharedStore
	group  string
	sub    sharedSubscription   // nil when it could not subscribe
	others map[string]sharedDoc // by member ID
}

func (g sharedGroup) members(now time.Time) ([]*statusDoc, uint64) {
	if g.sub == nil {
		return g.s.groupMembers(context.Background(), g.group, now)
	}
	for _, d := range g.sub.take() {
		if old, ok := g.others[d.id]; !ok || d.seq > old.seq {
			g.others[d.id] = d
		}
	}
	return g.s.withOthers(g.group, now, g.others)
}

func (g sharedGroup) close() {
	if g.sub != nil {
		g.sub.close()
	}
}

// hasGroup reports whether the group has a member here or on another
// instance: one lookup, so a group stream waiting for its first member
// costs a round trip per interval until one starts.
func (s *sharedStore) hasGroup(group string) bool {
	if s.local.hasGroup(group) {
		return true
	}
	docs, err := s.c.lookupGroup(context.Background(), group)
	return err == nil && len(docs) > 0
}

// groupEnded reports whether every member of the group has ended, here
// and on other instances (as far as the shared backend answers).
func (s *sharedStore) groupEnded(group string) bool {
	if !s.local.groupEnded(group) {
		return false
	}
	docs, err := s.c.lookupGroup(context.Background(), group)
	if err != nil {
		return true
	}
	for _, d := range docs {
		if !d.state.Final() {
			return false
		}
	}
	return true
}

// reserved reports whether id is reserved here or on another instance.
func (s *sharedStore) reserved(id string) bool {
	if s.local.reserved(id) {
		return true
	}
	d, err := s.c.lookup(context.Background(), id)
	return err == nil && d.state == progress.StatePending
}

// Interface guards
var (
	_ uploadStore  = (*sharedStore)(nil)
	_ uploadFollow = (*sharedFollow)(nil)
	_ groupFollow  = sharedGroup{}
)
