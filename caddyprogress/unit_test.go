package caddyprogress

import (
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"strings"
	"testing"
	"time"
)

func TestValidateID(t *testing.T) {
	for _, ok := range []string{"a", "A-z_0.9~:", strings.Repeat("x", 128)} {
		if err := validateID(ok); err != nil {
			t.Errorf("validateID(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("x", 129), "a/b", "a b", "é", "a%20", "<x>"} {
		if validateID(bad) == nil {
			t.Errorf("validateID(%q) accepted it", bad)
		}
	}
	if id := newID(); len(id) != 22 || validateID(id) != nil || id == newID() {
		t.Errorf("newID() = %q", id)
	}
}

func TestSpeedIsOverTheLastSeconds(t *testing.T) {
	var w speedWindow
	// 1 MB/s for 10 s, sampled every 100ms
	for i := 1; i <= 100; i++ {
		at := time.Duration(i) * 100 * time.Millisecond
		if got := w.observe(at, int64(i)*100_000); i > 5 && got != 1_000_000 {
			t.Fatalf("at %s: speed %d, want 1000000", at, got)
		}
	}
	// then 4 MB/s: after the window has passed, only the new rate counts
	var got int64
	for i := 1; i <= 40; i++ {
		at := 10*time.Second + time.Duration(i)*100*time.Millisecond
		got = w.observe(at, 10_000_000+int64(i)*400_000)
	}
	if got != 4_000_000 {
		t.Fatalf("speed after the change = %d, want 4000000", got)
	}
}

func TestSpeedFromASinglePoll(t *testing.T) {
	var w speedWindow
	if got := w.observe(2*time.Second, 1_000_000); got != 500_000 {
		t.Fatalf("first poll after 2s and 1 MB: speed %d, want 500000", got)
	}
}

func TestTrackerEvictsClosestToExpiry(t *testing.T) {
	tr := newTracker("unit")
	defer tr.Destruct()
	a, _ := tr.start("a", 1, 0, 3)
	b, _ := tr.start("b", 1, 0, 3)
	c, _ := tr.start("c", 1, 0, 3)
	tr.finish(b, progress.StateComplete, 200, "", time.Minute)
	tr.finish(a, progress.StateComplete, 200, "", time.Minute)
	if _, err := tr.start("d", 1, 0, 3); err != nil {
		t.Fatal(err)
	}
	if tr.lookup("b").found() || !tr.lookup("a").found() {
		t.Fatalf("the first finished record (b) should have made room")
	}
	if _, err := tr.start("c", 1, 0, 3); err != errInFlight {
		t.Fatalf("starting an in-flight ID: %v, want errInFlight", err)
	}
	tr.finish(c, progress.StateError, 500, "x", time.Minute)
	tr.removeExpired(time.Now().Add(2 * time.Minute))
	if tr.lookup("a").found() || tr.lookup("c").found() || tr.get("d") == nil || tr.finished.Len()+tr.reservations.Len() != 0 {
		t.Fatalf("expired records left: %v", tr.uploads)
	}
}
