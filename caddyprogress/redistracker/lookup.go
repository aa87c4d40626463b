package redistracker

import (
	"context"
	"slices"
	"strconv"
	"strings"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/redis/go-redis/v9"
)

// Lookup returns the latest document of an upload or reservation,
// published on any instance: ErrNotFound if Redis has none,
// ErrUnavailable if Redis did not answer within Timeout (or is marked
// down).
func (t *Tracker) Lookup(ctx context.Context, id string) (Doc, error) {
	ctx, cancel, err := t.startRequest(ctx, "upload", id)
	if err != nil {
		return Doc{}, err
	}
	defer cancel()
	var read *redis.SliceCmd
	if _, err := t.pipeline(ctx, func(p redis.Pipeliner) {
		read = p.HMGet(ctx, t.keys.record(id), "st", "doc", "grp", "seq")
	}); err != nil {
		return Doc{}, ErrUnavailable
	}
	f, err := read.Result()
	if err != nil || len(f) != 4 {
		return Doc{}, ErrUnavailable
	}
	st, ok := f[0].(string)
	if !ok {
		return Doc{}, ErrNotFound
	}
	doc, _ := f[1].(string)
	grp, _ := f[2].(string)
	seqText, _ := f[3].(string)
	seq, _ := strconv.ParseInt(seqText, 10, 64)
	return Doc{ID: id, Group: grp, State: progress.NamedState(st), Seq: seq, JSON: []byte(doc)}, nil
}

// LookupGroup returns the latest documents of a group's members, in one
// round trip, ordered by ID; finished members are left out once their
// record has expired. ErrNotFound if Redis knows no member.
func (t *Tracker) LookupGroup(ctx context.Context, group string) ([]Doc, error) {
	ctx, cancel, err := t.startRequest(ctx, "group", group)
	if err != nil {
		return nil, err
	}
	defer cancel()
	var now *redis.TimeCmd
	var all *redis.MapStringStringCmd
	if _, err := t.pipeline(ctx, func(p redis.Pipeliner) {
		now = p.Time(ctx)
		all = p.HGetAll(ctx, t.keys.group(group))
	}); err != nil {
		return nil, ErrUnavailable
	}
	nowMS := now.Val().UnixMilli()
	var docs []Doc
	for id, v := range all.Val() {
		// "<token> <state> <expires ms> <seq> <doc>"
		f := strings.SplitN(v, " ", 5)
		if len(f) != 5 {
			continue
		}
		st := progress.NamedState(f[1])
		expires, _ := strconv.ParseInt(f[2], 10, 64)
		if st.Final() && expires <= nowMS {
			continue
		}
		seq, _ := strconv.ParseInt(f[3], 10, 64)
		docs = append(docs, Doc{ID: id, Group: group, State: st, Seq: seq, JSON: []byte(f[4])})
	}
	if len(docs) == 0 {
		return nil, ErrNotFound
	}
	slices.SortFunc(docs, func(a, b Doc) int { return strings.Compare(a.ID, b.ID) })
	return docs, nil
}

// Count returns how many records the tracker holds across the cluster:
// uploads in flight, and finished uploads and reservations not yet
// expired (as MaxUploads counts them).
func (t *Tracker) Count(ctx context.Context) (inFlight, finished int64, err error) {
	if err := t.usable(); err != nil {
		return 0, 0, err
	}
	ctx, cancel := t.requestContext(ctx)
	defer cancel()
	var count *redis.Cmd
	if _, err := t.pipeline(ctx, func(p redis.Pipeliner) {
		count = countScript.EvalSha(ctx, p, []string{t.keys.live(), t.keys.done()})
	}); err != nil {
		return 0, 0, ErrUnavailable
	}
	n, err := count.Int64Slice()
	if err != nil || len(n) != 2 {
		return 0, 0, ErrUnavailable
	}
	return n[0], n[1], nil
}
