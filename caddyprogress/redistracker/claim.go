package redistracker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/redis/go-redis/v9"
)

// Upload is this instance's handle on one claimed upload. Its methods
// never wait on Redis: they hand the document to the tracker's
// publisher.
type Upload struct {
	t     *Tracker
	id    string
	group string
	token string // this claim's own random token, owner of the record

	watchedUntil atomic.Int64                           // unix ns: another instance watches it until then (watch.go)
	current      atomic.Pointer[func() (State, []byte)] // reads the current document (SetCurrent)

	mu       sync.Mutex
	state    State
	doc      []byte
	seq      int64     // the seq of the last document sent
	sentTick uint64    // the publisher's tick when the last document was taken; 0: never
	leased   time.Time // when the lease was last set (before the claim or renewal was sent)
	urgent   bool      // send the document with the next batch, whatever its tick (the answer to a watch)
	claimed  bool      // the claim is in Redis (false: re-claim when Redis answers)
	lost     bool      // another instance ended the claim: local only from now on
	done     bool      // the final document was sent (or the upload was lost)
}

// ID is the upload's ID.
func (u *Upload) ID() string { return u.id }

// Lost reports whether the upload went on locally only because another
// instance ended or took its claim while Redis could not be reached.
func (u *Upload) Lost() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.lost
}

// Publish hands the upload's current document to the publisher, which
// stores and publishes it at most once per Interval (a final one at
// once) in a batch with the other uploads' documents;
// only the latest document given counts. A progress document of an
// upload that no other instance watches (see Watched) is kept, not
// sent. After a final document, later calls are ignored. It never
// blocks on Redis.
func (u *Upload) Publish(state State, doc []byte) { u.hand(state, doc, false) }

// hand is Publish; with now, the document goes with the publisher's
// next batch, whatever the Interval (the answer to a watch).
func (u *Upload) hand(state State, doc []byte, now bool) {
	u.mu.Lock()
	if u.done || u.state.Final() {
		u.mu.Unlock()
		return
	}
	u.state, u.doc = state, doc
	u.urgent = u.urgent || now
	urgent := state.Final() || !u.claimed || now
	u.mu.Unlock()
	if !urgent && !u.Watched() {
		return
	}
	u.t.markDirty(u, urgent)
}

// Claim claims id for an upload starting on this instance, in group
// ("" for none), with its first document. When the tracker holds
// MaxUploads records across the cluster, it makes room by evicting the
// finished record closest to expiry, or returns ErrFull. ErrInFlight
// means another upload with the ID is in flight somewhere.
//
// If Redis cannot be reached (or does not answer within Timeout), Claim
// returns a handle anyway and the upload goes on: it is claimed when
// Redis is back, or, if the ID was taken meanwhile, stays local (Lost).
func (t *Tracker) Claim(ctx context.Context, id, group string, state State, doc []byte) (*Upload, error) {
	if err := validateID("upload", id); err != nil {
		return nil, err
	}
	if group != "" {
		if err := validateID("group", group); err != nil {
			return nil, err
		}
	}
	u := &Upload{t: t, id: id, group: group, token: newToken(), state: state, doc: doc}
	if err := t.usable(); err == ErrClosed {
		return nil, err
	}
	// the watch channel is subscribed before the claim, whose answer
	// may be a watch of the ID (idle.go)
	ctx, cancel := t.requestContext(ctx)
	defer cancel()
	release := t.listenForWatches(ctx)
	defer release()
	switch err := t.usable(); err {
	case ErrClosed:
		return nil, err
	case nil:
		switch err := t.claim(ctx, u); err {
		case ErrFull, ErrInFlight:
			t.askScan() // a lost instance's records may be in the way
			return nil, err
		}
	}
	return t.local(u), nil
}

// claim counts u's ID into the tracker's records and claims it, within
// Timeout: ErrFull, ErrInFlight, ErrUnavailable (u stays unclaimed), or
// nil (u holds the claim). It hands the claim to the claimer, which
// sends it in one pipelined round trip with the other claims waiting
// (see claimBatch), and waits for its answer, or Timeout. The claim
// publishes nothing: the record it writes may be taken back (see
// admitAndPut), so the first document goes through the publisher once
// the claim holds.
func (t *Tracker) claim(ctx context.Context, u *Upload) error {
	ctx, cancel := t.requestContext(ctx)
	defer cancel()
	r := &claimRequest{
		ctx:    ctx,
		u:      &Upload{id: u.id, group: u.group, token: u.token, seq: u.seq},
		state:  u.state,
		doc:    u.doc,
		result: make(chan claimResult, 1),
	}
	sent := time.Now()
	t.queueClaim(r)
	select {
	case res := <-r.result:
		if res.err != nil {
			return res.err
		}
		u.seq, u.claimed, u.leased = res.seq, true, sent
		return nil
	case <-ctx.Done():
		// the upload goes on unclaimed; the claimer's round trip, if it
		// ran out of time too, counts the error and has Redis pinged
		return ErrUnavailable
	case <-t.stop:
		return ErrUnavailable
	}
}

// local registers u with the tracker and queues its first document.
// A claimed upload's record already holds it, so Lookup sees it at
// once, and the claim counts as the upload's first send: the document
// goes to the subscribers like a progress one, an Interval later, and
// if the upload ends first only its final document goes (an upload
// shorter than an Interval costs the claim and one publish). A group
// member's goes with the publisher's next batch (a tick, at most half
// an Interval away), since the group's hash learns of it only then. An
// unclaimed upload wakes the publisher to claim it.
func (t *Tracker) local(u *Upload) *Upload {
	t.mu.Lock()
	t.uploads[u.id] = u
	t.takeEarlyWatch(u)
	if u.claimed && u.group == "" {
		u.mu.Lock()
		u.sentTick = max(t.tick, 1)
		u.mu.Unlock()
		if u.Watched() {
			t.dirty[u] = struct{}{}
		}
		t.mu.Unlock()
		return u
	}
	t.mu.Unlock()
	t.markDirty(u, !u.claimed)
	return u
}

// admitAndPut counts u's ID into the tracker's records (see
// admitScript) and stores its document (putScript) in one pipelined
// round trip: two scripts, since the indexes and the record live in
// different hash slots. admitScript cannot stop putScript, so when the
// tracker is full but the record was written anyway, a second round
// trip takes it back (undoPutScript): that is only on the way to
// ErrFull. It returns the document's seq, or ErrFull, ErrInFlight or
// ErrUnavailable.
func (t *Tracker) admitAndPut(ctx context.Context, u *Upload, index string, score time.Duration, state State, doc []byte) (int64, error) {
	var admit, put *redis.Cmd
	if _, err := t.pipeline(ctx, func(p redis.Pipeliner) {
		admit = t.admitCmd(ctx, p, index, score, u.id)
		put = t.putCmd(ctx, p, u, state, doc, nil, false)
	}); err != nil && !isReply(err) {
		return 0, ErrUnavailable
	}
	seq, putErr := put.Int64()
	res, undo, evicted := admitAndPutResult(admitReplies(admit, 1)[0], seq, putErr)
	if undo > 0 {
		_, _ = t.pipeline(ctx, func(p redis.Pipeliner) {
			undoPutScript.EvalSha(ctx, p, []string{t.keys.record(u.id)}, u.token, undo)
		})
	}
	if evicted != "" {
		_, _ = t.pipeline(ctx, func(p redis.Pipeliner) {
			dropScript.EvalSha(ctx, p, []string{t.keys.record(evicted)})
		})
	}
	return res.seq, res.err
}

// admitCmd queues admitScript for ids: index "live" or "done", score
// the time from now to their deadline there (lease or retain).
func (t *Tracker) admitCmd(ctx context.Context, p redis.Pipeliner, index string, score time.Duration, ids ...string) *redis.Cmd {
	args := make([]any, 0, 3+len(ids))
	args = append(args, t.cfg.MaxUploads, index, score.Milliseconds())
	for _, id := range ids {
		args = append(args, id)
	}
	return admitScript.EvalSha(ctx, p, []string{t.keys.live(), t.keys.done()}, args...)
}

// admitReply is admitScript's answer for one ID.
type admitReply struct {
	ok      bool
	evicted string // the ID of a record evicted to make room, "" for none
	err     error  // the script failed: the claim is not admitted
}

// admitReplies reads admitScript's answers for n IDs.
func admitReplies(cmd *redis.Cmd, n int) []admitReply {
	replies := make([]admitReply, n)
	reply, err := cmd.Slice()
	if err == nil && len(reply) != 2*n {
		err = fmt.Errorf("admit script answered %d values for %d IDs", len(reply), n)
	}
	for i := range replies {
		if err != nil {
			replies[i].err = err
			continue
		}
		ok, _ := reply[2*i].(int64)
		evicted, _ := reply[2*i+1].(string)
		replies[i] = admitReply{ok: ok == 1, evicted: evicted}
	}
	return replies
}

// putCmd queues putScript for u's document.
func (t *Tracker) putCmd(ctx context.Context, p redis.Pipeliner, u *Upload, state State, doc, summary []byte, reclaim bool) *redis.Cmd {
	c := t.putCall(u, state, doc, summary, reclaim)
	return putScript.EvalSha(ctx, p, []string{c.key}, c.args...)
}

// putCall is putScript's call for u's document, alone or in a batch;
// summary is what the group's channel gets of it (a re-claim only).
func (t *Tracker) putCall(u *Upload, state State, doc, summary []byte, reclaim bool) recordCall {
	flag := "0"
	if reclaim {
		flag = "1"
	}
	t.stats.docBytes.Add(uint64(len(doc)))
	var upChan, groupChan string
	if reclaim {
		upChan = t.keys.uploadChannel(u.id)
		if u.group != "" {
			groupChan = t.keys.groupChannel(u.group)
		}
	}
	return recordCall{key: t.keys.record(u.id), args: []any{
		u.token, state.String(), doc, u.group, t.cfg.Lease.Milliseconds(), t.cfg.Retain.Milliseconds(),
		flag, u.seq + 1, u.id, upChan, groupChan, t.keys.watch(), summary, t.cfg.Instance}}
}

// Reserve records id as pending for Retain, across the cluster, with its
// document, for a client that wants its ID before it uploads (the
// upload that uses it may name a group; the reservation has none). It counts
// toward MaxUploads (ErrFull); ErrInFlight means an upload with the ID is
// in flight; ErrUnavailable means Redis did not answer, and the core
// keeps the reservation locally.
func (t *Tracker) Reserve(ctx context.Context, id string, doc []byte) error {
	ctx, cancel, err := t.startRequest(ctx, "upload", id)
	if err != nil {
		return err
	}
	defer cancel()
	_, err = t.admitAndPut(ctx, &Upload{id: id}, "done", t.cfg.Retain, progress.StatePending, doc)
	if err == ErrFull || err == ErrInFlight {
		t.askScan() // a lost instance's records may be in the way
	}
	return err
}

// newToken returns a random token that tells one claim from another.
func newToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
