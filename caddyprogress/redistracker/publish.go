package redistracker

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// The publisher: one goroutine per tracker drains the uploads with a
// document to send ("dirty"), all of them in one pipeline per batch.
// The queue holds one entry per upload (its latest document), so it is
// bounded by the uploads in flight, and a document that waits is
// replaced by a newer one, never queued behind it. A final or
// re-claiming document goes at once; a first one with the next batch
// (its record holds it since the claim). Progress documents go on a tick
// every half Interval, each upload's at most every second tick: at most
// once per Interval per upload, at most two round trips per Interval
// for all of them, and a wait of at most half an Interval.

// markDirty queues u's latest document; urgent wakes the publisher now,
// the others wait for its tick.
func (t *Tracker) markDirty(u *Upload, urgent bool) {
	t.mu.Lock()
	t.dirty[u] = struct{}{}
	t.mu.Unlock()
	if urgent {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

// requeue puts u back among the dirty uploads without waking the
// publisher.
func (t *Tracker) requeue(u *Upload) {
	t.mu.Lock()
	t.dirty[u] = struct{}{}
	t.mu.Unlock()
}

// publishGather is how long the publisher lets urgent documents gather
// before it sends them, while they keep coming (see publishLoop).
const publishGather = 10 * time.Millisecond

// publishLoop is the publisher. An urgent document (a final one) goes
// at once when the publisher has been idle; while they keep coming (the
// last batch ended within publishGather), the publisher lets them
// gather for publishGather first, as the claimer does, so that many
// uploads ending at once share round trips.
func (t *Tracker) publishLoop() {
	ticker := time.NewTicker(max(t.cfg.Interval/2, time.Millisecond))
	defer ticker.Stop()
	var lastEnd time.Time
	for {
		urgentOnly := true
		select {
		case <-t.stop:
			return
		case <-t.wake:
			if time.Since(lastEnd) < publishGather {
				time.Sleep(publishGather)
			}
		case <-ticker.C:
			urgentOnly = false
		}
		if !t.health.up.Load() {
			continue // the health loop wakes us when Redis is back
		}
		ctx, cancel := context.WithTimeout(context.Background(), backgroundTimeout)
		t.publishDue(ctx, urgentOnly, false)
		cancel()
		lastEnd = time.Now()
	}
}

// flush sends every queued document now, within backgroundTimeout.
func (t *Tracker) flush() {
	if !t.health.up.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), backgroundTimeout)
	defer cancel()
	t.publishDue(ctx, false, true)
}

// outgoing is one upload's document in a batch.
type outgoing struct {
	u       *Upload
	state   State
	doc     []byte
	summary []byte // what the group's hash and channel get (Config.Summary); nil without a group
	seq     int64
	reclaim bool
	result  func() (int64, error) // publishScript's or putScript's, once the pipeline ran
}

// publishDue sends the documents that are due: the urgent ones only,
// those of this tick, or all of them.
func (t *Tracker) publishDue(ctx context.Context, urgentOnly, all bool) {
	batch := t.takeDue(urgentOnly, all)
	if len(batch) == 0 {
		return
	}
	start := time.Now()
	_, err := t.pipeline(ctx, func(p redis.Pipeliner) { t.queueBatch(ctx, p, batch) })
	t.stats.observePublish(time.Since(start))
	if err != nil && !isReply(err) {
		for _, o := range batch {
			t.requeue(o.u) // sent again once Redis is back
		}
		return
	}
	if reclaimed := t.takeResults(batch, start); len(reclaimed) > 0 {
		_, _ = t.pipeline(ctx, func(p redis.Pipeliner) {
			for _, o := range reclaimed {
				t.groupCmd(ctx, p, o)
			}
		})
	}
}

// queueBatch queues in p, for each document of batch: its record's
// script (a publish, or a re-claim), its group's, and the moves of
// finished IDs to the done index and of re-claimed ones to the live
// index. Each document's result is read from o.result once p ran.
func (t *Tracker) queueBatch(ctx context.Context, p redis.Pipeliner, batch []*outgoing) {
	var retire, touch []any
	var publishing []*outgoing
	var calls []recordCall
	for _, o := range batch {
		if o.reclaim {
			o.result = t.putCmd(ctx, p, o.u, o.state, o.doc, o.summary, true).Int64
		} else {
			publishing = append(publishing, o)
			t.stats.docBytes.Add(uint64(len(o.doc)))
			calls = append(calls, recordCall{key: t.keys.record(o.u.id), args: []any{
				o.u.token, o.state.String(), o.doc, t.ttl(o.state).Milliseconds(), o.seq, o.u.id,
				t.keys.uploadChannel(o.u.id), t.groupChannel(o.u.group), o.u.group, o.summary}})
		}
		if o.u.group != "" && !o.reclaim { // after a re-claim only if it succeeds (takeResults)
			t.groupCmd(ctx, p, o)
		}
		if o.state.Final() {
			retire = append(retire, o.u.id)
		} else if o.reclaim {
			touch = append(touch, o.u.id)
		}
	}
	if len(calls) > 0 {
		result := t.callRecords(ctx, p, publishScript, publishBatchScript, calls)
		for i, o := range publishing {
			o.result = func() (int64, error) { return result(i) }
		}
	}
	if len(retire) > 0 {
		retireScript.EvalSha(ctx, p, []string{t.keys.live(), t.keys.done()},
			append([]any{t.cfg.Retain.Milliseconds()}, retire...)...)
	}
	if len(touch) > 0 {
		touchScript.EvalSha(ctx, p, []string{t.keys.live()},
			append([]any{t.cfg.Lease.Milliseconds(), "add"}, touch...)...)
	}
}

// takeResults reads what Redis answered for each document of batch, sent
// at start: sent, queued again (an error reply), claimed again (Redis
// lost the record), or lost to another instance. It returns the
// re-claimed members of a group, whose group script goes next.
func (t *Tracker) takeResults(batch []*outgoing, start time.Time) (reclaimed []*outgoing) {
	for _, o := range batch {
		seq, err := o.result()
		switch {
		case err != nil: // an error reply: tried again on a tick, not at once
			t.requeue(o.u)
		case seq > 0:
			t.sent(o, seq, start)
			if o.reclaim && o.u.group != "" {
				o.seq = seq
				reclaimed = append(reclaimed, o)
			}
		case seq == -2: // Redis lost the record: claim it again
			o.u.mu.Lock()
			o.u.claimed = false
			o.u.mu.Unlock()
			t.markDirty(o.u, true)
		default:
			t.lose(o.u, "another instance ended or took the upload's ID while this one could not reach redis")
		}
	}
	return reclaimed
}

// groupCmd queues groupScript for a member's document. In the same
// pipeline as the record's own script: if that one refuses a stale
// owner, the group's hash refuses it too once the record has a final
// document of the claim (see groupScript).
func (t *Tracker) groupCmd(ctx context.Context, p redis.Pipeliner, o *outgoing) {
	t.stats.docBytes.Add(uint64(len(o.summary)))
	groupScript.EvalSha(ctx, p, []string{t.keys.group(o.u.group)},
		o.u.id, o.u.token, o.state.String(), t.ttl(o.state).Milliseconds(), o.seq, o.summary)
}

// takeDue takes the due uploads off the dirty set: the urgent ones
// (never sent, final, or to be re-claimed), and unless urgentOnly those
// whose last document went two ticks ago or more; with all, every one.
func (t *Tracker) takeDue(urgentOnly, all bool) []*outgoing {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !urgentOnly && !all {
		t.tick++
	}
	batch := make([]*outgoing, 0, len(t.dirty))
	for u := range t.dirty {
		u.mu.Lock()
		if u.done {
			u.mu.Unlock()
			delete(t.dirty, u)
			continue
		}
		urgent := !u.claimed || u.state.Final() || u.sentTick == 0 || u.urgent
		if !all && !urgent && (urgentOnly || t.tick-u.sentTick < 2) {
			u.mu.Unlock()
			continue
		}
		batch = append(batch, &outgoing{u: u, state: u.state, doc: u.doc, seq: u.seq + 1, reclaim: !u.claimed})
		u.sentTick, u.urgent = max(t.tick, 1), false
		u.mu.Unlock()
		delete(t.dirty, u)
	}
	for _, o := range batch { // outside the locks: a summary is made from the document
		if o.u.group != "" {
			o.summary = t.cfg.Summary(o.doc)
		}
	}
	return batch
}

// sent records a document stored as seq by the pipeline that started
// at start (a re-claim's lease was set after it).
func (t *Tracker) sent(o *outgoing, seq int64, start time.Time) {
	t.stats.published.Add(1)
	u := o.u
	u.mu.Lock()
	u.seq = max(u.seq, seq)
	if o.reclaim {
		u.leased = start
	}
	u.claimed = true
	finished := o.state.Final()
	if finished {
		u.done = true
	}
	u.mu.Unlock()
	if finished {
		t.forgetUpload(u)
	}
}

// lose marks u as lost: it goes on locally, no longer published.
func (t *Tracker) lose(u *Upload, why string) {
	u.mu.Lock()
	already := u.lost
	u.lost, u.done = true, true
	u.mu.Unlock()
	if already {
		return
	}
	t.stats.lost.Add(1)
	t.forgetUpload(u)
	// at most once a second: a partition can lose many uploads at once
	if !t.lostLog.Allow() {
		return
	}
	t.log.Warn("upload no longer shared through redis; it goes on locally (more may follow unlogged this second)",
		zap.String("id", u.id), zap.String("reason", why), zap.Uint64("lost_so_far", t.stats.lost.Load()))
}

// forgetUpload stops renewing u; the last upload to go lets the watch
// channel go (idle.go).
func (t *Tracker) forgetUpload(u *Upload) {
	t.mu.Lock()
	if t.uploads[u.id] == u {
		delete(t.uploads, u.id)
	}
	t.mu.Unlock()
	t.stopListeningIfIdle()
}

// reclaimAll queues every upload of this instance to be claimed again
// and republished: Redis came back, maybe empty.
func (t *Tracker) reclaimAll() {
	t.mu.Lock()
	uploads := make([]*Upload, 0, len(t.uploads))
	for _, u := range t.uploads {
		uploads = append(uploads, u)
	}
	t.mu.Unlock()
	for _, u := range uploads {
		u.mu.Lock()
		u.claimed = false
		u.mu.Unlock()
		t.markDirty(u, true)
	}
	if len(uploads) == 0 {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

// ttl is how long a record in state lives without renewal: Retain
// after it ends, and while in flight one lease more.
func (t *Tracker) ttl(state State) time.Duration {
	if state.Final() {
		return t.cfg.Retain
	}
	return t.cfg.Lease + t.cfg.Retain
}

// groupChannel is the group's channel, or "" for no group.
func (t *Tracker) groupChannel(group string) string {
	if group == "" {
		return ""
	}
	return t.keys.groupChannel(group)
}
