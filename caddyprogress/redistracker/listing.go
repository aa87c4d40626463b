package redistracker

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/redis/go-redis/v9"
)

// The listing of the uploads in flight on the other instances, for the
// core's admin listing: read only when an operator asks (no loop), from
// the live index and each upload's record, in three pipelined round
// trips (one per node on Redis Cluster): the index's size and its
// first IDs; each record's state, group, seq, instance and the length
// of its document; then the documents that fit. It is bounded both by
// the number of uploads (ListMax) and by the bytes of documents read
// (ListBudget), so that many uploads with many files cannot make one
// listing read megabytes from Redis; what is left out is counted.
// Listing 1,000 uploads of another instance with 400-byte documents
// took 9ms, 3 round trips and 2.5 MB allocated (2-core VM, Redis 7.0 on
// loopback, BenchmarkListThousandUploads).

// Bounds of a listing.
const (
	// ListMax is how many uploads a listing reads at most.
	ListMax = 1000
	// ListBudget is how many bytes of documents a listing reads at
	// most: uploads past it are left out (Listing.Truncated).
	ListBudget = 4 << 20
	// ListMaxDoc is the longest document a listing reads: a record
	// with a longer one (the core never publishes more than 64 KiB) is
	// skipped (Listing.Skipped).
	ListMaxDoc = 64 << 10
	// listTimeout bounds the three round trips of a listing.
	listTimeout = time.Second
)

// maxInstanceLength bounds Config.Instance, which every record stores.
const maxInstanceLength = 128

// Listing is the uploads in flight across the cluster, as Redis has
// them.
type Listing struct {
	// Instance is this instance's name (Config.Instance), as the
	// uploads it claimed have it.
	Instance string
	// Uploads are the other instances' (this one knows its own), in
	// the order of the live index (soonest lease deadline first).
	Uploads []Listed
	// InFlight counts the live index: the uploads in flight on every
	// instance, listed or not.
	InFlight int64
	// Truncated is true when uploads in flight were left out: past
	// ListMax, or past ListBudget bytes of documents.
	Truncated bool
	// Skipped counts records left out for a document longer than
	// ListMaxDoc, or an ID that is not valid.
	Skipped int
}

// Listed is one upload of a listing: its latest stored document (as
// Lookup returns it) and the instance that runs it ("" for a record
// stored by an older version, which did not name it).
type Listed struct {
	Doc
	Instance string
}

// List reads the uploads in flight on the other instances of the
// tracker, within a second: ErrUnavailable if Redis does not answer (or
// is marked down), ErrClosed after Close. The uploads this instance
// claimed count in InFlight and ListMax, but their documents are not
// read. An upload that finished between two round trips is left out.
func (t *Tracker) List(ctx context.Context) (Listing, error) {
	if err := t.usable(); err != nil {
		return Listing{}, err
	}
	// marked as on a request's path: a listing that runs out of time
	// has Redis pinged, and does not mark it down itself
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, requestPathKey{}, true), listTimeout)
	defer cancel()
	out := Listing{Instance: t.cfg.Instance}
	listed, err := t.listLive(ctx, &out)
	if err != nil || len(listed) == 0 {
		return out, err
	}
	wanted, err := t.listWanted(ctx, listed, &out)
	if err != nil || len(wanted) == 0 {
		return out, err
	}
	return out, t.listDocs(ctx, wanted, &out)
}

// listLive reads how many uploads are in flight and the IDs of the first
// ListMax (the first round trip).
func (t *Tracker) listLive(ctx context.Context, out *Listing) ([]string, error) {
	var count *redis.IntCmd
	var ids *redis.StringSliceCmd
	if _, err := t.pipeline(ctx, func(p redis.Pipeliner) {
		count = p.ZCard(ctx, t.keys.live())
		ids = p.ZRange(ctx, t.keys.live(), 0, ListMax-1)
	}); err != nil {
		*out = Listing{}
		return nil, ErrUnavailable
	}
	out.InFlight = count.Val()
	listed := make([]string, 0, len(ids.Val()))
	for _, id := range ids.Val() {
		if validateID("upload", id) != nil {
			out.Skipped++
			continue
		}
		listed = append(listed, id)
	}
	out.Truncated = out.InFlight > int64(len(ids.Val()))
	return listed, nil
}

// listWanted reads the state, group, seq and instance of each listed
// upload and its document's length, and keeps those of other instances
// in flight whose documents fit the budget (the second round trip).
func (t *Tracker) listWanted(ctx context.Context, listed []string, out *Listing) ([]Listed, error) {
	metas := make([]*redis.SliceCmd, len(listed))
	lengths := make([]*redis.IntCmd, len(listed))
	if _, err := t.pipeline(ctx, func(p redis.Pipeliner) {
		for i, id := range listed {
			metas[i] = p.HMGet(ctx, t.keys.record(id), "st", "grp", "seq", "ins")
			lengths[i] = p.HStrLen(ctx, t.keys.record(id), "doc")
		}
	}); err != nil && !isReply(err) {
		*out = Listing{}
		return nil, ErrUnavailable
	}
	budget := int64(ListBudget)
	var wanted []Listed
	for i, id := range listed {
		f, err := metas[i].Result()
		if err != nil || len(f) != 4 {
			continue
		}
		st, ok := f[0].(string)
		ins, _ := f[3].(string)
		switch {
		case !ok || st == progress.StatePending.String() || progress.NamedState(st).Final():
			continue // gone, a reservation, or ended since the index was read
		case ins == t.cfg.Instance:
			continue // this instance's: the core knows it better
		}
		n := lengths[i].Val()
		if n > ListMaxDoc {
			out.Skipped++
			continue
		}
		if n > budget {
			out.Truncated = true
			break
		}
		budget -= n
		grp, _ := f[1].(string)
		seqText, _ := f[2].(string)
		seq, _ := strconv.ParseInt(seqText, 10, 64)
		wanted = append(wanted, Listed{Doc: Doc{ID: id, Group: grp, State: progress.NamedState(st), Seq: seq}, Instance: clipInstance(ins)})
	}
	return wanted, nil
}

// listDocs reads the documents of the wanted uploads into out.Uploads,
// within the budget (the third round trip).
func (t *Tracker) listDocs(ctx context.Context, wanted []Listed, out *Listing) error {
	docs := make([]*redis.SliceCmd, len(wanted))
	if _, err := t.pipeline(ctx, func(p redis.Pipeliner) {
		for i, l := range wanted {
			docs[i] = p.HMGet(ctx, t.keys.record(l.ID), "st", "doc")
		}
	}); err != nil && !isReply(err) {
		*out = Listing{}
		return ErrUnavailable
	}
	out.Uploads = make([]Listed, 0, len(wanted))
	read := 0 // documents may have grown since their length was read
	for i, l := range wanted {
		f, err := docs[i].Result()
		if err != nil || len(f) != 2 {
			continue
		}
		st, _ := f[0].(string)
		doc, ok := f[1].(string)
		switch {
		case !ok || st == "" || progress.NamedState(st).Final():
			continue // ended, or gone, since its state was read
		case len(doc) > ListMaxDoc:
			out.Skipped++ // grew past the bound since its length was read
			continue
		case read+len(doc) > ListBudget:
			out.Truncated = true
			continue
		}
		read += len(doc)
		l.State, l.JSON = progress.NamedState(st), []byte(doc)
		out.Uploads = append(out.Uploads, l)
	}
	return nil
}

// validateInstance reports why a name cannot name an instance: as an ID,
// 1 to 128 bytes without spaces or control characters.
func validateInstance(name string) error {
	if len(name) > maxInstanceLength {
		return fmt.Errorf("instance name is %d bytes long; at most %d are allowed", len(name), maxInstanceLength)
	}
	return validateID("instance", name)
}

// clipInstance bounds an instance name read from Redis, which another
// writer may have stored.
func clipInstance(name string) string {
	if len(name) <= maxInstanceLength {
		return name
	}
	return strings.ToValidUTF8(name[:maxInstanceLength], "")
}
