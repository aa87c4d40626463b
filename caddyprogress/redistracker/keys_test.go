package redistracker

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

// hashTag is the part of a key Redis Cluster hashes: between the first
// "{" and the next "}", if that is not empty; else the whole key.
func hashTag(key string) string {
	open := strings.IndexByte(key, '{')
	if open < 0 {
		return key
	}
	end := strings.IndexByte(key[open+1:], '}')
	if end <= 0 {
		return key
	}
	return key[open+1 : open+1+end]
}

func TestKeysKeepAnUploadInOneHashSlot(t *testing.T) {
	k := newKeys("site:a{b}")
	id := "up:1"
	if hashTag(k.record(id)) != hashTag(k.uploadChannel(id)) {
		t.Fatalf("record %q and channel %q in different slots", k.record(id), k.uploadChannel(id))
	}
	if hashTag(k.live()) != hashTag(k.done()) || hashTag(k.live()) != hashTag(k.demand()) || hashTag(k.live()) != hashTag(k.demandCount()) {
		t.Fatal("the tracker's indexes are in different slots")
	}
	if hashTag(k.group("g")) != hashTag(k.groupChannel("g")) {
		t.Fatal("a group's hash and channel in different slots")
	}
	want := map[string]string{
		k.record(id):        "upload_progress:{site%3Aa%7Bb%7D:up%3A1}:record",
		k.group("g"):        "upload_progress:group:{site%3Aa%7Bb%7D:g}:members",
		k.live():            "upload_progress:tracker:{site%3Aa%7Bb%7D}:live",
		k.done():            "upload_progress:tracker:{site%3Aa%7Bb%7D}:done",
		k.uploadChannel(id): "upload_progress:{site%3Aa%7Bb%7D:up%3A1}:events",
	}
	for got, w := range want {
		if got != w {
			t.Errorf("key %q, want %q", got, w)
		}
	}
	// names that could mix namespaces do not
	if newKeys("a:b").record("c") == newKeys("a").record("b:c") {
		t.Fatal("tracker a:b upload c and tracker a upload b:c share a key")
	}
}

func TestEverythingWorksOnRedisCluster(t *testing.T) {
	srv := testredis.StartCluster(t)
	url := "redis-cluster://" + srv.Addr()
	a := newTestTracker(t, srv, Config{URL: url, Instance: "a", Lease: 600 * time.Millisecond, MaxUploads: 10})
	b := newTestTracker(t, srv, Config{URL: url, Instance: "b", Lease: 600 * time.Millisecond, MaxUploads: 10})

	sub, err := a.SubscribeGroup(bg(), "cg")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	u1 := claimed(t, a, "c1", "cg")
	if _, err := b.Claim(bg(), "c1", "", progress.StateUploading, nil); !errors.Is(err, ErrInFlight) {
		t.Fatalf("duplicate claim on a cluster: %v", err)
	}
	if err := b.Reserve(bg(), "c2", progressDoc("c2", progress.StatePending, 0)); err != nil {
		t.Fatal(err)
	}
	u2 := claimed(t, b, "c2", "cg")
	u1.Publish(progress.StateComplete, progressDoc("c1", progress.StateComplete, 1))
	u2.Publish(progress.StateProcessing, progressDoc("c2", progress.StateProcessing, 2))
	waitFor(t, 2*time.Second, "both members in the group", func() bool {
		docs, err := a.LookupGroup(bg(), "cg")
		return err == nil && len(docs) == 2 && docs[0].State == progress.StateComplete && docs[1].State == progress.StateProcessing
	})
	if live, done, err := a.Count(bg()); err != nil || live != 1 || done != 1 {
		t.Fatalf("count: %d %d %v", live, done, err)
	}
	_ = b.shutdown() // c2's instance is lost
	waitFor(t, 3*time.Second, "c2 aborted", func() bool {
		d, err := a.Lookup(bg(), "c2")
		return err == nil && d.State == progress.StateAborted
	})
	finals := map[string]State{}
	waitFor(t, time.Second, "the group's final documents through pub/sub", func() bool {
		for _, d := range sub.Take() {
			if d.Final() {
				if _, seen := finals[d.ID]; seen {
					t.Fatalf("a second final document for %s", d.ID)
				}
				finals[d.ID] = d.State
			}
		}
		return len(finals) == 2
	})
	if finals["c1"] != progress.StateComplete || finals["c2"] != progress.StateAborted {
		t.Fatalf("finals: %v", finals)
	}
	if e := a.Stats().Errors; e != 0 {
		t.Fatalf("%d errors on the cluster (CROSSSLOT?)", e)
	}
}
