package redistracker

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

// subscriberConnections counts the connections of a tracker's client
// that are subscribed to a channel, and the channels they hold (the
// tracker's watch channel is one while it has uploads).
func subscriberConnections(t *testing.T, srv *testredis.Server, tr *Tracker) (subscribed, channels int) {
	t.Helper()
	list, err := srv.Client(t).ClientList(bg()).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		if !strings.Contains(line, " name=upload_progress:"+tr.keys.tracker+" ") {
			continue
		}
		_, rest, _ := strings.Cut(line, " sub=")
		field, _, _ := strings.Cut(rest, " ")
		n, err := strconv.Atoi(field)
		if err != nil {
			t.Fatalf("no sub= in %q", line)
		}
		if n > 0 {
			subscribed++
			channels += n
		}
	}
	return subscribed, channels
}

func TestManySubscribersShareOnePubSubConnection(t *testing.T) {
	srv := testredis.Start(t)
	a := newTestTracker(t, srv, Config{Instance: "a"})
	b := newTestTracker(t, srv, Config{Tracker: "other", Instance: "b"})

	const uploads, perUpload = 20, 5
	subs := make(map[string][]*Subscription)
	for i := range uploads {
		id := fmt.Sprintf("m%02d", i)
		for range perUpload {
			s, err := b.Subscribe(bg(), id)
			if err != nil {
				t.Fatal(err)
			}
			subs[id] = append(subs[id], s)
		}
	}
	groupSub, err := b.SubscribeGroup(bg(), "all")
	if err != nil {
		t.Fatal(err)
	}
	if sub, _ := subscriberConnections(t, srv, b); sub != 1 {
		t.Fatalf("%d subscribed connections for %d subscribers, want 1", sub, uploads*perUpload+1)
	}
	// wrong tracker: b's subscribers are in another namespace
	if _, err := a.Claim(bg(), "m00", "all", progress.StateUploading, progressDoc("m00", progress.StateUploading, 0)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	for _, s := range subs["m00"] {
		if got := s.Take(); len(got) != 0 {
			t.Fatalf("a document of tracker test reached tracker other: %+v", got)
		}
	}
	// same tracker: every subscriber of an ID gets its documents, and
	// only its own
	c := newTestTracker(t, srv, Config{Tracker: "other", Instance: "c"})
	for i := range uploads {
		id := fmt.Sprintf("m%02d", i)
		u, err := c.Claim(bg(), id, "all", progress.StateUploading, progressDoc(id, progress.StateUploading, 0))
		if err != nil {
			t.Fatal(err)
		}
		u.Publish(progress.StateComplete, progressDoc(id, progress.StateComplete, i))
	}
	for id, list := range subs {
		for _, s := range list {
			var pending []Doc
			var final Doc
			for !final.Final() {
				final = next(t, s, &pending, 2*time.Second)
				if final.ID != id {
					t.Fatalf("subscriber of %s got a document of %s", id, final.ID)
				}
			}
			s.Close()
		}
	}
	finals := map[string]bool{}
	waitFor(t, 2*time.Second, "the group's final documents", func() bool {
		for _, d := range groupSub.Take() {
			if d.Final() {
				if d.Group != "all" || finals[d.ID] {
					t.Fatalf("group document %+v (seen: %v)", d, finals[d.ID])
				}
				finals[d.ID] = true
			}
		}
		return len(finals) == uploads
	})
	groupSub.Close()
	// unsubscribed: with nothing left to follow, b closes its pub/sub
	// connection, and c, whose uploads have all ended, lets its watch
	// channel go and closes its own (idle.go)
	waitFor(t, time.Second, "the channels to be unsubscribed", func() bool {
		sub, channels := subscriberConnections(t, srv, b)
		return sub == 0 && channels == 0
	})
}

func TestSlowSubscriberKeepsTheFinalDocument(t *testing.T) {
	srv := testredis.Start(t)
	a := newTestTracker(t, srv, Config{Instance: "a", Interval: time.Millisecond})
	b := newTestTracker(t, srv, Config{Instance: "b"})
	s := subscribed(t, b, "slow")
	if err := b.Watch(bg(), "slow"); err != nil {
		t.Fatal(err)
	}
	u, err := a.Claim(bg(), "slow", "", progress.StateUploading, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		u.Publish(progress.StateUploading, progressDoc("slow", progress.StateUploading, i))
		time.Sleep(200 * time.Microsecond)
	}
	u.Publish(progress.StateError, progressDoc("slow", progress.StateError, 500))
	var last Doc
	waitFor(t, 2*time.Second, "the final document", func() bool {
		s.mu.Lock()
		n := len(s.queue)
		if n > 0 {
			last = s.queue[n-1]
		}
		s.mu.Unlock()
		if n > maxQueued {
			t.Fatalf("%d documents queued, more than %d", n, maxQueued)
		}
		return last.Final()
	})
	if last.State != progress.StateError {
		t.Fatalf("final: %+v", last)
	}
}
