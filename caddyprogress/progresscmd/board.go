package progresscmd

import (
	"cmp"
	"context"
	"slices"
	"time"
)

// board is what `top` shows: the uploads in flight from the admin
// listing, and the ones that finished since, which stay for linger in
// their final state.
type board struct {
	admin   *adminClient
	tracker string        // show only this tracker; "" for all
	linger  time.Duration // how long a finished upload stays
	cluster bool          // every instance's uploads (trackers with redis)

	last     map[uploadKey]uploadInfo // the uploads in flight at the last refresh
	finished map[uploadKey]lingering
}

type uploadKey struct{ tracker, id string }

type lingering struct {
	upload uploadInfo
	until  time.Time
}

func newBoard(admin *adminClient, tracker string, linger time.Duration, cluster bool) *board {
	return &board{
		admin:    admin,
		tracker:  tracker,
		linger:   linger,
		cluster:  cluster,
		last:     make(map[uploadKey]uploadInfo),
		finished: make(map[uploadKey]lingering),
	}
}

// finalStates are the states an upload ends in.
var finalStates = map[string]bool{"complete": true, "error": true, "aborted": true}

// refresh reads the listing and returns the trackers to show, each with
// its uploads in flight and its lingering finished ones, in the order
// they started.
func (b *board) refresh(ctx context.Context, now time.Time) ([]trackerInfo, error) {
	l, err := b.admin.list(ctx, b.cluster)
	if err != nil {
		return nil, err
	}
	trackers := filterTrackers(l.Trackers, b.tracker)
	current := make(map[uploadKey]uploadInfo)
	for _, t := range trackers {
		for _, u := range t.Uploads {
			current[uploadKey{t.Name, u.ID}] = u
		}
	}
	// an upload gone from the listing has ended: ask for its final status
	for k, u := range b.last {
		if _, ok := current[k]; ok {
			continue
		}
		final, ok, err := b.admin.upload(ctx, k.tracker, k.id, b.cluster)
		if err != nil || !ok || !finalStates[final.Status] {
			continue // its record is gone, or it is being reused
		}
		final.Group, final.Instance = u.Group, u.Instance
		if final.Files == nil {
			final.Files = u.Files
		}
		b.finished[k] = lingering{upload: final, until: now.Add(b.linger)}
	}
	b.last = current
	for k, f := range b.finished {
		if _, again := current[k]; again || now.After(f.until) {
			delete(b.finished, k)
		}
	}
	for i := range trackers {
		t := &trackers[i]
		for k, f := range b.finished {
			if k.tracker == t.Name {
				t.Uploads = append(t.Uploads, f.upload)
			}
		}
		slices.SortStableFunc(t.Uploads, func(x, y uploadInfo) int {
			return cmp.Or(x.StartedAt.Compare(y.StartedAt), cmp.Compare(x.ID, y.ID))
		})
	}
	return trackers, nil
}

// filterTrackers keeps the tracker named name, or all for "".
func filterTrackers(all []trackerInfo, name string) []trackerInfo {
	if name == "" {
		return all
	}
	for _, t := range all {
		if t.Name == name {
			return []trackerInfo{t}
		}
	}
	return []trackerInfo{}
}
