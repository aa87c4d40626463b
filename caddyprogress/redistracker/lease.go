package redistracker

import (
	"bytes"
	"context"
	"encoding/json"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/redis/go-redis/v9"
)

// Leases: a claimed upload in flight holds a lease (its record's lease
// field, and its score in the tracker's live index), renewed by one
// loop per tracker for this instance's uploads, in one pipeline, three
// times per Lease: those whose lease was set half a renewal period ago
// or more (an upload shorter than that is never renewed; the others
// are renewed at the latest one and a half periods after their lease
// was set, half a period before a renewal that fails once would leave
// it expired). Every instance scans the live index for leases
// past their deadline (every second, or twice per Lease if shorter) and
// ends those uploads as aborted with LostDoc's document: abortScript
// makes that happen once, whichever instance gets there first, and it
// publishes the final document to the subscribers everywhere.

// renewEvery is how often leases are renewed.
func (t *Tracker) renewEvery() time.Duration { return t.cfg.Lease / 3 }

// scanEvery is how often the live index is scanned for lost leases.
func (t *Tracker) scanEvery() time.Duration { return min(time.Second, t.cfg.Lease/2) }

func (t *Tracker) renewLoop() {
	t.every(t.renewEvery(), t.renew)
}

// scanLoop scans while this instance runs or follows uploads (idle.go),
// and at once when a claim or reservation was refused: the refusal may
// come from the records of a lost instance that no instance scans.
func (t *Tracker) scanLoop() {
	ticker := time.NewTicker(t.scanEvery())
	defer ticker.Stop()
	for {
		asked := false
		select {
		case <-t.stop:
			return
		case <-ticker.C:
		case <-t.scanNow:
			asked = true
		}
		if !t.health.up.Load() || (!asked && !t.busy()) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), backgroundTimeout)
		// 100 at a time, so that a lost instance with many uploads
		// has them all ended in one scan
		for range maxScanBatches {
			if t.abortLost(ctx) < expiredBatch {
				break
			}
		}
		cancel()
	}
}

// askScan has the scan loop scan now.
func (t *Tracker) askScan() {
	select {
	case t.scanNow <- struct{}{}:
	default:
	}
}

// expiredBatch is how many expired leases expiredScript lists at once,
// and maxScanBatches how many lists one scan goes through.
const (
	expiredBatch   = 100
	maxScanBatches = 20
)

// every runs f every d while Redis is up, until the tracker stops.
func (t *Tracker) every(d time.Duration, f func(context.Context)) {
	ticker := time.NewTicker(d)
	defer ticker.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-ticker.C:
		}
		if !t.health.up.Load() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), backgroundTimeout)
		f(ctx)
		cancel()
	}
}

// renew extends the leases of this instance's claimed uploads that
// need it.
func (t *Tracker) renew(ctx context.Context) {
	start := time.Now()
	t.mu.Lock()
	var uploads []*Upload
	for _, u := range t.uploads {
		u.mu.Lock()
		if u.claimed && !u.done && start.Sub(u.leased) >= t.renewEvery()/2 {
			uploads = append(uploads, u)
		}
		u.mu.Unlock()
	}
	t.mu.Unlock()
	if len(uploads) == 0 {
		return
	}
	lease := t.cfg.Lease.Milliseconds()
	ids := make([]any, 0, 2+len(uploads))
	ids = append(ids, lease, "update")
	calls := make([]recordCall, len(uploads))
	for i, u := range uploads {
		state, doc := u.unsentDoc()
		t.stats.docBytes.Add(uint64(len(doc)))
		calls[i] = recordCall{key: t.keys.record(u.id), args: []any{u.token, lease, t.cfg.Retain.Milliseconds(), state, doc}}
		ids = append(ids, u.id)
	}
	var renewed func(i int) (int64, error)
	_, err := t.pipeline(ctx, func(p redis.Pipeliner) {
		renewed = t.callRecords(ctx, p, renewScript, renewBatchScript, calls)
		for _, u := range uploads {
			if u.group != "" {
				p.PExpire(ctx, t.keys.group(u.group), t.ttl(progress.StateUploading))
			}
		}
		touchScript.EvalSha(ctx, p, []string{t.keys.live()}, ids...)
	})
	if err != nil && !isReply(err) {
		return
	}
	for i, u := range uploads {
		switch n, err := renewed(i); {
		case err != nil:
		case n == 1:
			u.mu.Lock()
			u.leased = start
			u.mu.Unlock()
		case n == -2: // Redis lost the record: claim it again
			u.mu.Lock()
			u.claimed = false
			u.mu.Unlock()
			t.markDirty(u, true)
		case n == 0:
			u.mu.Lock()
			ending := u.state.Final()
			u.mu.Unlock()
			if ending {
				continue // its own final document got there first: not lost
			}
			t.lose(u, "its lease expired and another instance ended it")
		}
	}
}

// abortLost ends the uploads whose lease expired (their instance is
// lost) as aborted, up to expiredBatch of them; it returns how many
// expired leases it found.
func (t *Tracker) abortLost(ctx context.Context) int {
	ids := t.expiredLeases(ctx)
	if len(ids) == 0 {
		return 0
	}
	victims, forget, ok := t.readLost(ctx, ids)
	if !ok {
		return 0
	}
	if len(victims) > 0 && !t.abortEach(ctx, victims) {
		return 0
	}
	t.retireLost(ctx, victims, forget)
	return len(ids)
}

// lostUpload is an upload whose lease expired, as its record holds it.
type lostUpload struct {
	id, group, token, seq string
	doc                   []byte
	abort                 *redis.Cmd // its abortScript call
}

// expiredLeases lists up to expiredBatch IDs whose lease expired.
func (t *Tracker) expiredLeases(ctx context.Context) []string {
	var list *redis.Cmd
	if _, err := t.pipeline(ctx, func(p redis.Pipeliner) {
		list = expiredScript.EvalSha(ctx, p, []string{t.keys.live()}, expiredBatch)
	}); err != nil {
		return nil
	}
	ids, _ := list.StringSlice()
	return ids
}

// readLost reads the records of ids: the uploads still in flight (to
// abort), and the IDs to drop from the live index (expired, or ended
// without retiring). ok is false when Redis did not answer.
func (t *Tracker) readLost(ctx context.Context, ids []string) (victims []*lostUpload, forget []any, ok bool) {
	reads := make([]*redis.SliceCmd, len(ids))
	if _, err := t.pipeline(ctx, func(p redis.Pipeliner) {
		for i, id := range ids {
			reads[i] = p.HMGet(ctx, t.keys.record(id), "st", "own", "seq", "doc", "grp")
		}
	}); err != nil && !isReply(err) {
		return nil, nil, false
	}
	for i, id := range ids {
		f, err := reads[i].Result()
		if err != nil || len(f) != 5 {
			continue
		}
		st, _ := f[0].(string)
		if !progress.NamedState(st).InFlight() {
			forget = append(forget, id)
			continue
		}
		own, _ := f[1].(string)
		seq, _ := f[2].(string)
		doc, _ := f[3].(string)
		grp, _ := f[4].(string)
		victims = append(victims, &lostUpload{id: id, group: grp, token: own, seq: seq, doc: t.cfg.LostDoc([]byte(doc))})
	}
	return victims, forget, true
}

// abortEach ends each victim's record as aborted (unless its owner or
// another instance got there first); false when Redis did not answer.
func (t *Tracker) abortEach(ctx context.Context, victims []*lostUpload) bool {
	_, err := t.pipeline(ctx, func(p redis.Pipeliner) {
		for _, v := range victims {
			v.abort = abortScript.EvalSha(ctx, p, []string{t.keys.record(v.id)},
				v.token, v.seq, v.doc, t.cfg.Retain.Milliseconds(), v.id,
				t.keys.uploadChannel(v.id), t.groupChannel(v.group), v.group, t.cfg.Summary(v.doc))
		}
	})
	return err == nil || isReply(err)
}

// retireLost records the aborts that took in their groups, moves those
// IDs to the finished index, and drops the forgotten ones from the live
// index, in one round trip.
func (t *Tracker) retireLost(ctx context.Context, victims []*lostUpload, forget []any) {
	var retire []any
	var grouped []*lostUpload
	var seqs []int64
	for _, v := range victims {
		if seq, err := v.abort.Int64(); err == nil && seq > 0 {
			t.stats.aborted.Add(1)
			retire = append(retire, v.id)
			if v.group != "" {
				grouped = append(grouped, v)
				seqs = append(seqs, seq)
			}
		}
	}
	if len(retire)+len(forget) == 0 {
		return
	}
	_, _ = t.pipeline(ctx, func(p redis.Pipeliner) {
		for i, v := range grouped {
			groupScript.EvalSha(ctx, p, []string{t.keys.group(v.group)},
				v.id, v.token, progress.StateAborted.String(), t.cfg.Retain.Milliseconds(), seqs[i], t.cfg.Summary(v.doc))
		}
		if len(retire) > 0 {
			retireScript.EvalSha(ctx, p, []string{t.keys.live(), t.keys.done()},
				append([]any{t.cfg.Retain.Milliseconds()}, retire...)...)
		}
		if len(forget) > 0 {
			forgetScript.EvalSha(ctx, p, []string{t.keys.live()}, forget...)
		}
	})
}

// LostError is the error of an upload whose instance was lost.
const LostError = "instance lost"

// DefaultLostDoc makes the final document of an upload whose instance
// was lost from its last one, for the core's status JSON: "status"
// becomes "aborted", "error" "instance lost", and "finished_at" and
// "updated_at" now; the other fields are kept. A document that is not a
// JSON object is replaced by {"status":"aborted","error":"instance lost"}.
func DefaultLostDoc(last []byte) []byte {
	doc := map[string]any{}
	dec := json.NewDecoder(bytes.NewReader(last))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil || doc == nil {
		doc = map[string]any{}
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	doc["status"] = progress.StateAborted.String()
	doc["error"] = LostError
	doc["finished_at"] = now
	doc["updated_at"] = now
	out, err := json.Marshal(doc)
	if err != nil {
		return []byte(`{"status":"aborted","error":"instance lost"}`)
	}
	return out
}
