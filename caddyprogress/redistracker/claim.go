package redistracker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"

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

	mu       sync.Mutex
	state    State
	doc      []byte
	seq      int64  // the seq of the last document sent
	sentTick uint64 // the publisher's tick when the last document was taken; 0: never
	claimed  bool   // the claim is in Redis (false: re-claim when Redis answers)
	lost     bool   // another instance ended the claim: local only from now on
	done     bool   // the final document was sent (or the upload was lost)
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
// stores and publishes it at most once per Interval (the first one and
// a final one at once) in a batch with the other uploads' documents;
// only the latest document given counts. After a final document, later
// calls are ignored. It never blocks on Redis.
func (u *Upload) Publish(state State, doc []byte) {
	u.mu.Lock()
	if u.done || u.state.Final() {
		u.mu.Unlock()
		return
	}
	u.state, u.doc = state, doc
	urgent := state.Final() || !u.claimed
	u.mu.Unlock()
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
	switch err := t.usable(); err {
	case ErrClosed:
		return nil, err
	case nil:
		switch err := t.claim(ctx, u); err {
		case ErrFull, ErrInFlight:
			return nil, err
		}
	}
	return t.local(u), nil
}

// claim counts u's ID into the tracker's records and claims it, within
// Timeout: ErrFull, ErrInFlight, ErrUnavailable (u stays unclaimed), or
// nil (u holds the claim).
func (t *Tracker) claim(ctx context.Context, u *Upload) error {
	ctx, cancel := t.requestContext(ctx)
	defer cancel()
	if err := t.admit(ctx, u.id, "live", t.cfg.Lease); err != nil {
		return err
	}
	var put *redis.Cmd
	if _, err := t.pipeline(ctx, func(p redis.Pipeliner) {
		put = t.putCmd(ctx, p, u, u.state, u.doc, false)
	}); err != nil {
		return ErrUnavailable
	}
	seq, err := put.Int64()
	switch {
	case err != nil:
		return ErrUnavailable
	case seq == 0:
		return ErrInFlight
	}
	u.seq, u.claimed = seq, true
	return nil
}

// local registers u with the tracker and queues its first document.
func (t *Tracker) local(u *Upload) *Upload {
	t.mu.Lock()
	t.uploads[u.id] = u
	t.mu.Unlock()
	t.markDirty(u, true)
	return u
}

// admit counts id into the tracker's records (see admitScript), and
// deletes the record it evicted to make room: ErrFull, ErrUnavailable
// or nil.
func (t *Tracker) admit(ctx context.Context, id, index string, score time.Duration) error {
	var cmd *redis.Cmd
	if _, err := t.pipeline(ctx, func(p redis.Pipeliner) {
		cmd = admitScript.EvalSha(ctx, p, []string{t.keys.live(), t.keys.done()},
			id, t.cfg.MaxUploads, index, score.Milliseconds())
	}); err != nil {
		return ErrUnavailable
	}
	reply, err := cmd.Slice()
	if err != nil || len(reply) != 2 {
		return ErrUnavailable
	}
	if ok, _ := reply[0].(int64); ok == 0 {
		return ErrFull
	}
	if evicted, _ := reply[1].(string); evicted != "" {
		_, _ = t.pipeline(ctx, func(p redis.Pipeliner) {
			dropScript.EvalSha(ctx, p, []string{t.keys.record(evicted)})
		})
	}
	return nil
}

// putCmd queues putScript for u's document.
func (t *Tracker) putCmd(ctx context.Context, p redis.Pipeliner, u *Upload, state State, doc []byte, reclaim bool) *redis.Cmd {
	flag := "0"
	if reclaim {
		flag = "1"
	}
	var upChan, groupChan string
	if reclaim {
		upChan = t.keys.uploadChannel(u.id)
		if u.group != "" {
			groupChan = t.keys.groupChannel(u.group)
		}
	}
	return putScript.EvalSha(ctx, p, []string{t.keys.record(u.id)},
		u.token, string(state), doc, u.group, t.cfg.Lease.Milliseconds(), t.cfg.Retain.Milliseconds(),
		flag, u.seq+1, u.id, upChan, groupChan)
}

// Reserve records id as pending for Retain, across the cluster, with its
// document, for a client that wants its ID before it uploads (the
// upload that uses it may name a group; the reservation has none). It counts
// toward MaxUploads (ErrFull); ErrInFlight means an upload with the ID is
// in flight; ErrUnavailable means Redis did not answer, and the core
// keeps the reservation locally.
func (t *Tracker) Reserve(ctx context.Context, id string, doc []byte) error {
	if err := validateID("upload", id); err != nil {
		return err
	}
	if err := t.usable(); err != nil {
		return err
	}
	ctx, cancel := t.requestContext(ctx)
	defer cancel()
	if err := t.admit(ctx, id, "done", t.cfg.Retain); err != nil {
		if err == ErrFull {
			return err
		}
		return ErrUnavailable
	}
	u := &Upload{id: id}
	var put *redis.Cmd
	if _, err := t.pipeline(ctx, func(p redis.Pipeliner) {
		put = t.putCmd(ctx, p, u, StatePending, doc, false)
	}); err != nil {
		return ErrUnavailable
	}
	if seq, _ := put.Int64(); seq == 0 {
		return ErrInFlight
	}
	return nil
}

// newToken returns a random token that tells one claim from another.
func newToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
