package redistracker

import (
	"strings"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

func TestKeyComparesRedisSettings(t *testing.T) {
	same := [][]string{
		{"redis://cache", "redis://cache:6379", "redis://cache:6379/0", "redis://cache/"},
		{"rediss://u:secret@cache:6380/2", "rediss://u:secret@cache:6380/2/"},
		{"redis-cluster://n1:7000?addr=n2:7000", "redis-cluster://n1:7000/?addr=n2:7000"},
		{"redis-sentinel://s1:26379/1?master_name=m&dial_timeout=1s", "redis-sentinel://s1:26379/1?dial_timeout=1s&master_name=m"},
	}
	seen := map[string]string{}
	for _, group := range same {
		first, err := Key(group[0])
		if err != nil {
			t.Fatalf("Key(%q): %v", group[0], err)
		}
		for _, u := range group[1:] {
			k, err := Key(u)
			if err != nil || k != first {
				t.Errorf("Key(%q) = %q, %v; want %q as for %q", u, k, err, first, group[0])
			}
		}
		if other, ok := seen[first]; ok {
			t.Errorf("%q and %q have one key %q", group[0], other, first)
		}
		seen[first] = group[0]
	}
	for _, pair := range [][2]string{
		{"redis://cache/0", "redis://cache/1"},
		{"redis://u:a@cache", "redis://u:b@cache"},
		{"redis://cache", "rediss://cache"},
	} {
		a, _ := Key(pair[0])
		b, _ := Key(pair[1])
		if a == b {
			t.Errorf("%q and %q have one key %q", pair[0], pair[1], a)
		}
	}
	k, _ := Key("redis-sentinel://u:sentinelpw@s1/0?master_name=m&password=masterpw")
	if strings.Contains(k, "sentinelpw") || strings.Contains(k, "masterpw") {
		t.Errorf("a key shows a password: %q", k)
	}
}

func TestBadRedisURLsAreRefusedWithAReason(t *testing.T) {
	for url, want := range map[string]string{
		"cache:6379":                      "no scheme",
		"http://cache":                    `scheme "http"`,
		"redis://cache/x":                 "invalid database number",
		"redis://cache/0?colour=blue":     "unexpected option",
		"redis-sentinel://s1:26379":       "master_name",
		"redis-cluster://n1?pool_size=ab": "pool_size",
		"redis://u:s3cret@cache:bad/0":    "invalid port",
	} {
		_, err := Key(url)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Key(%q): %v, want an error about %q", url, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Key(%q): the error shows the password: %v", url, err)
		}
		if _, err := New(Config{URL: url, Tracker: "t"}); err == nil {
			t.Errorf("New with %q: no error", url)
		}
	}
}

func TestNewWithRedisDownStartsMarkedDown(t *testing.T) {
	srv := testredis.Start(t)
	srv.Kill()
	start := time.Now()
	tr := newTestTracker(t, srv, Config{Instance: "a", Timeout: DefaultTimeout})
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Fatalf("New took %v with Redis down", took)
	}
	u, err := tr.Claim(bg(), "early", "", progress.StateUploading, progressDoc("early", progress.StateUploading, 7))
	if err != nil {
		t.Fatalf("claim with Redis down: %v", err)
	}
	if tr.Health().Up {
		t.Fatal("health up with Redis down")
	}
	srv.Start()
	waitFor(t, 3*time.Second, "the upload claimed once Redis is up", func() bool {
		d, err := tr.Lookup(bg(), "early")
		return err == nil && string(d.JSON) == string(progressDoc("early", progress.StateUploading, 7))
	})
	if u.Lost() {
		t.Fatal("upload lost")
	}
}

func TestCallsAfterCloseSayClosed(t *testing.T) {
	srv := testredis.Start(t)
	tr := newTestTracker(t, srv, Config{Instance: "a"})
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Claim(bg(), "x", "", progress.StateUploading, nil); err != ErrClosed {
		t.Errorf("Claim: %v", err)
	}
	if err := tr.Reserve(bg(), "x", nil); err != ErrClosed {
		t.Errorf("Reserve: %v", err)
	}
	if _, err := tr.Lookup(bg(), "x"); err != ErrClosed {
		t.Errorf("Lookup: %v", err)
	}
	if _, err := tr.Subscribe(bg(), "x"); err != ErrClosed {
		t.Errorf("Subscribe: %v", err)
	}
}
