package caddyprogress

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/redistracker"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testredis"
)

// The two-instance tests of the cluster listing run Caddy processes
// (internal/clustertest, progresscmd); this one puts what another
// instance could store, well-formed or not, beside one in-process
// Caddy with status_access token.

func TestAdminClusterListingSkipsUnreadableDocumentsAndShowsWhatALocalEntryShows(t *testing.T) {
	rs := testredis.Start(t)
	up := newUpstream(t)
	p := startProxyWithAdmin(t, "\t\ttracker cluster-admin\n\t\tredis "+rs.URL()+"\n\t\tstatus_access token", up.host)

	other, err := redistracker.New(redistracker.Config{URL: rs.URL(), Tracker: "cluster-admin", Instance: "other:1", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	started := `"started_at":"2026-12-05T10:00:00Z"`
	for id, doc := range map[string]string{
		"good":      `{"id":"good","status":"uploading","received":5,"total":10,"speed":2,` + started + `}`,
		"not-json":  `{"id":"not-json","status":`,
		"bad-state": `{"id":"bad-state","status":"\u001b[2J",` + started + `}`,
		"other-id":  `{"id":"someone-else","status":"uploading",` + started + `}`,
	} {
		if _, err := other.Claim(context.Background(), id, "", progress.StateUploading, []byte(doc)); err != nil {
			t.Fatalf("claiming %s on the other instance: %v", id, err)
		}
	}

	// an upload of this instance, held part-way
	data := payload(1 << 20)
	paced := &pacedReader{data: data, chunk: 64 << 10, stopAt: 128 << 10, release: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.upload(t, http.MethodPost, "/", paced, int64(len(data)), nil)
	}()
	defer func() { close(paced.release); <-done }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if tr := trackerIn(t, p.listing(t), "cluster-admin"); len(tr.Uploads) == 1 && tr.Uploads[0].Received == 128<<10 {
			if tr.Cluster != nil || tr.Uploads[0].Instance != "" {
				t.Fatalf("the listing without ?cluster=1 has %+v, want no cluster part and no instance", tr)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the local upload never showed 128 KiB: %+v", p.listing(t))
		}
		time.Sleep(10 * time.Millisecond)
	}

	code, body := p.adminGet(t, "/upload_progress/?cluster=1")
	var raw struct {
		Trackers []struct {
			Name    string                       `json:"name"`
			Uploads []map[string]json.RawMessage `json:"uploads"`
			Cluster *adminCluster                `json:"cluster"`
		} `json:"trackers"`
	}
	if err := json.Unmarshal(body, &raw); err != nil || code != http.StatusOK {
		t.Fatalf("cluster listing: %d %s (%v)", code, body, err)
	}
	var l adminListing
	_ = json.Unmarshal(body, &l)
	tr := trackerIn(t, l, "cluster-admin")
	c := tr.Cluster
	if c == nil || c.Instance != instanceName || !c.Available || c.InFlight != 5 || c.Skipped != 3 || c.Truncated {
		t.Fatalf("cluster part %+v, want this instance %s, available, 5 in flight, the 3 unreadable documents skipped", c, instanceName)
	}
	if len(tr.Uploads) != 2 {
		t.Fatalf("uploads %+v, want the good one of the other instance and this one's", tr.Uploads)
	}
	var remote, local adminUpload
	var remoteKeys, localKeys []string
	for i, u := range tr.Uploads {
		keys := make([]string, 0, len(raw.Trackers[0].Uploads[i]))
		for k := range raw.Trackers[0].Uploads[i] {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if u.ID == "good" {
			remote, remoteKeys = u, keys
		} else {
			local, localKeys = u, keys
		}
	}
	if remote.Instance != "other:1" || remote.Status != "uploading" || remote.Received != 5 || remote.Total == nil || *remote.Total != 10 || remote.Speed != 2 {
		t.Errorf("the other instance's upload is listed as %+v", remote)
	}
	if local.Instance != instanceName || local.Received != 128<<10 {
		t.Errorf("this instance's upload is listed as %+v", local)
	}
	// with status_access token, an upload of another instance shows what
	// one of this instance shows: its ID and progress, nothing else
	if strings.Join(remoteKeys, " ") != strings.Join(localKeys, " ") {
		t.Errorf("another instance's entry has the fields %v, this instance's %v", remoteKeys, localKeys)
	}
	if strings.Contains(strings.ToLower(string(body)), "token") {
		t.Errorf("the cluster listing mentions a token: %s", body)
	}
}

// An instance's name is a valid ID whatever its host is called, as
// Redis's side requires (redistracker refuses any other), and still
// tells the host and the process apart.
func TestInstanceNameIsAnIDForAnyHostName(t *testing.T) {
	for host, want := range map[string]string{
		"vm-1.example.com":       "vm-1.example.com:42",
		"héllo wörld/x+y":        "h-llo-w-rld-x-y:42",
		strings.Repeat("a", 300): strings.Repeat("a", 100) + ":42",
	} {
		got := instanceNameOf(host, 42)
		if got != want {
			t.Errorf("host %q: instance %q, want %q", host, got, want)
		}
		if err := progress.ValidateName("instance", got); err != nil {
			t.Errorf("host %q: instance %q is not an ID: %v", host, got, err)
		}
	}
}
