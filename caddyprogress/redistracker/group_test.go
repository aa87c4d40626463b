package redistracker

import (
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

func TestGroupWithMembersOnTwoInstancesIsFollowedThroughEither(t *testing.T) {
	srv := testredis.Start(t)
	a := newTestTracker(t, srv, Config{Instance: "a"})
	b := newTestTracker(t, srv, Config{Instance: "b"})
	subA, err := a.SubscribeGroup(bg(), "album")
	if err != nil {
		t.Fatal(err)
	}
	defer subA.Close()
	subB, err := b.SubscribeGroup(bg(), "album")
	if err != nil {
		t.Fatal(err)
	}
	defer subB.Close()

	p1 := claimed(t, a, "photo1", "album")
	p2 := claimed(t, b, "photo2", "album")
	if _, err := b.Claim(bg(), "other", "elsewhere", progress.StateUploading, nil); err != nil {
		t.Fatal(err)
	}
	p1.Publish(progress.StateComplete, progressDoc("photo1", progress.StateComplete, 10))
	time.Sleep(150 * time.Millisecond)
	p2.Publish(progress.StateUploading, progressDoc("photo2", progress.StateUploading, 20))

	for _, tr := range []*Tracker{a, b} {
		waitFor(t, 2*time.Second, "both members through "+tr.Instance(), func() bool {
			docs, err := tr.LookupGroup(bg(), "album")
			return err == nil && len(docs) == 2 &&
				docs[0].ID == "photo1" && docs[0].State == progress.StateComplete && docs[0].Group == "album" &&
				docs[1].ID == "photo2" && string(docs[1].JSON) == string(progressDoc("photo2", progress.StateUploading, 20))
		})
	}
	for _, s := range []*Subscription{subA, subB} {
		seen := map[string]bool{}
		waitFor(t, 2*time.Second, "both members' documents", func() bool {
			for _, d := range s.Take() {
				if d.Group != "album" || (d.ID != "photo1" && d.ID != "photo2") {
					t.Fatalf("group subscriber got %+v", d)
				}
				seen[d.ID] = true
			}
			return seen["photo1"] && seen["photo2"]
		})
	}
	if _, err := a.LookupGroup(bg(), "nobody"); err != ErrNotFound {
		t.Fatalf("unknown group: %v", err)
	}
}
