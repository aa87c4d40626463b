package redistracker

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// claimRequest is one Claim waiting for the claimer. It holds its own
// copy of what the claim sends, since a caller that gave up goes on with
// its Upload while the claimer may still read the request.
type claimRequest struct {
	ctx    context.Context // the caller's, bounded by Timeout
	u      *Upload         // a copy of the upload's ID, group, token and seq
	state  State
	doc    []byte
	result chan claimResult // buffered: the claimer never waits on a caller
}

// claimResult is a claim's answer: the document's seq, or ErrFull,
// ErrInFlight or ErrUnavailable.
type claimResult struct {
	seq int64
	err error
}

// queueClaim hands r to the claimer and wakes it.
func (t *Tracker) queueClaim(r *claimRequest) {
	t.claimMu.Lock()
	t.claimQueue = append(t.claimQueue, r)
	t.claimMu.Unlock()
	select {
	case t.claimWake <- struct{}{}:
	default:
	}
}

// takeClaims takes every claim queued.
func (t *Tracker) takeClaims() []*claimRequest {
	t.claimMu.Lock()
	defer t.claimMu.Unlock()
	batch := t.claimQueue
	t.claimQueue = nil
	return batch
}

// claimGather is how long the claimer lets claims gather before it
// sends them, while they keep coming (see claimLoop).
const claimGather = 5 * time.Millisecond

// claimLoop is the claimer (group commit): it sends every claim queued
// in one pipeline, at once when it has been idle; the claims that
// arrive while a pipeline is in flight go together in the next one.
// While claims keep coming (the last pipeline ended within
// claimGather), it waits claimGather before it sends, so that more of
// them share each round trip: at 1,000 uploads in flight each round
// trip then carries several claims instead of one or two, for up to
// claimGather more before an upload starts.
func (t *Tracker) claimLoop() {
	var lastEnd time.Time
	for {
		select {
		case <-t.stop:
			return // the callers stop waiting on t.stop too
		case <-t.claimWake:
		}
		if time.Since(lastEnd) < claimGather {
			time.Sleep(claimGather)
		}
		if batch := t.takeClaims(); len(batch) > 0 {
			t.claimBatch(batch)
			lastEnd = time.Now()
		}
	}
}

// claimBatch sends, for the claims in batch whose caller still waits,
// one admitScript that admits them all and their putScripts (one batch
// call, see batch.go), in one pipelined round trip (see admitAndPut)
// bounded by the latest of their deadlines, and answers each. Records
// written for refused claims are taken back, and evicted records
// dropped, in one more round trip before those claims are answered.
func (t *Tracker) claimBatch(batch []*claimRequest) {
	live, deadline := stillWaiting(batch)
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithDeadline(context.WithValue(context.Background(), requestPathKey{}, true), deadline)
	defer cancel()
	ids := make([]string, len(live))
	calls := make([]recordCall, len(live))
	for i, r := range live {
		ids[i] = r.u.id
		calls[i] = t.putCall(r.u, r.state, r.doc, nil, false)
	}
	var admit *redis.Cmd
	var put func(i int) (int64, error)
	share, demand := t.idleShare() // the first upload since idle: its share, in this round trip
	var takeShare func()
	if _, err := t.pipeline(ctx, func(p redis.Pipeliner) {
		admit = t.admitCmd(ctx, p, "live", t.cfg.Lease, ids...)
		put = t.callRecords(ctx, p, putScript, putBatchScript, calls)
		if share != nil {
			takeShare = t.demandCmd(ctx, p, share, demand)
		}
	}); err != nil && !isReply(err) {
		for _, r := range live {
			r.result <- claimResult{err: ErrUnavailable}
		}
		return
	}
	if takeShare != nil {
		takeShare() // before the claims are answered and their bodies read
	}
	t.answerClaims(ctx, live, admitReplies(admit, len(live)), put)
}

// stillWaiting is the claims of batch whose caller still waits, and the
// latest of their deadlines.
func stillWaiting(batch []*claimRequest) (live []*claimRequest, deadline time.Time) {
	for _, r := range batch {
		if r.ctx.Err() != nil {
			continue // the caller went on unclaimed: nothing to send
		}
		live = append(live, r)
		if d, _ := r.ctx.Deadline(); d.After(deadline) {
			deadline = d
		}
	}
	return live, deadline
}

// answerClaims answers each claim of live from its admission and put
// replies. A refused claim's record is taken back, and an evicted
// record dropped, in one more round trip before those claims are
// answered; the others are answered at once.
func (t *Tracker) answerClaims(ctx context.Context, live []*claimRequest, admits []admitReply, put func(i int) (int64, error)) {
	var later []*claimRequest // answered after the follow-up round trip
	var laterResults []claimResult
	var undos, drops []func(redis.Pipeliner)
	for i, r := range live {
		seq, putErr := put(i)
		res, undo, evicted := admitAndPutResult(admits[i], seq, putErr)
		if undo > 0 {
			id, token := r.u.id, r.u.token
			undos = append(undos, func(p redis.Pipeliner) {
				undoPutScript.EvalSha(ctx, p, []string{t.keys.record(id)}, token, undo)
			})
		}
		if evicted != "" {
			drops = append(drops, func(p redis.Pipeliner) {
				dropScript.EvalSha(ctx, p, []string{t.keys.record(evicted)})
			})
		}
		if undo > 0 || evicted != "" {
			later = append(later, r)
			laterResults = append(laterResults, res)
			continue
		}
		r.result <- res
	}
	if len(later) == 0 {
		return
	}
	_, _ = t.pipeline(ctx, func(p redis.Pipeliner) {
		for _, queue := range append(undos, drops...) {
			queue(p)
		}
	})
	for i, r := range later {
		r.result <- laterResults[i]
	}
}

// admitAndPutResult reads the replies of one claim's admission and put
// script: its result, the seq of a record to take back (the tracker was
// full; 0 for none) and the ID of a record the admission evicted (""
// for none).
func admitAndPutResult(admit admitReply, seq int64, putErr error) (res claimResult, undo int64, evicted string) {
	if admit.err != nil {
		return claimResult{err: ErrUnavailable}, 0, ""
	}
	if !admit.ok {
		if putErr == nil && seq > 0 {
			undo = seq
		}
		return claimResult{err: ErrFull}, undo, ""
	}
	evicted = admit.evicted
	switch {
	case putErr != nil:
		return claimResult{err: ErrUnavailable}, 0, evicted
	case seq == 0:
		return claimResult{err: ErrInFlight}, 0, evicted
	}
	return claimResult{seq: seq}, 0, evicted
}
