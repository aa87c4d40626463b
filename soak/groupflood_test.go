package soak

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// floodRoute is a route of its own under /flood/: status_access token
// on a tracker of its own (the witness's stays as it is), with its own
// progress routes, and a small max_group_uploads.
const floodRoute = `	handle /flood/* {
		upload_progress {
			tracker groupflood
			status_path /flood/status/
			events_path /flood/events/
			ws_path /flood/ws/
			status_access token
			token_secret a-soak-secret-of-more-than-16-bytes
			max_group_uploads 4
			%s
		}
		reverse_proxy %s {
			transport http {
				keepalive 1s
			}
		}
	}
`

// TestFaultGroupFlood: a client floods an owner's group with uploads
// that name it without its token (and wrong tokens), reserves groups
// by the thousand, and names groups of its own; meanwhile the owner
// uploads into its reserved group. The process stays up, every flood
// upload goes through intact (tracked on its own), and the owner's
// group holds its members only, all complete and intact.
func TestFaultGroupFlood(t *testing.T) {
	px := startProxy(t, "")
	px.config = strings.Replace(px.config, "\thandle /throttled/* {", fmt.Sprintf(floodRoute, soakOptions, px.up.host)+"\thandle /throttled/* {", 1)
	testcaddy.Load(t, px.config)
	f := beginFault(t, px)
	const statusPath = "/flood/status/"

	resp, err := px.h1.Post(px.base+statusPath+"?group", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var group struct{ Group, Token string }
	err = json.NewDecoder(resp.Body).Decode(&group)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated || group.Token == "" {
		t.Fatalf("group reservation: %d %v", resp.StatusCode, err)
	}

	upload := func(seed uint64, size int, header http.Header) (string, http.Header) {
		data := payload(seed, size)
		req, _ := http.NewRequest(http.MethodPost, px.base+"/flood/upload", strings.NewReader(string(data)))
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := px.h1.Do(req)
		if err != nil {
			t.Errorf("upload %d: %v", seed, err)
			return "", nil
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		id := resp.Header.Get("X-Upload-ID")
		sum := sha256.Sum256(data)
		if got, _ := px.up.get(id); resp.StatusCode != http.StatusOK || got.sha256 != hex.EncodeToString(sum[:]) {
			t.Errorf("upload %d (%s): %d, arrived %+v", seed, id, resp.StatusCode, got)
		}
		return id, resp.Header
	}

	n := scale(600, 20000)
	var stolen atomic.Int64
	flood := make(chan struct{})
	go func() {
		defer close(flood)
		inParallel(n, 32, func(i int) {
			switch i % 3 {
			case 0: // the owner's group, without its token or with a wrong one
				header := http.Header{"X-Upload-Group": {group.Group}}
				if i%2 == 0 {
					header.Set("X-Upload-Group-Token", fmt.Sprintf("guess-%d", i))
				}
				if _, answer := upload(uint64(i), 2048, header); answer.Get("X-Upload-Group-Token") != "" {
					stolen.Add(1)
				}
			case 1: // a reservation
				resp, err := px.h1.Post(px.base+statusPath+"?group", "", nil)
				if err != nil {
					t.Errorf("reserving a group: %v", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusCreated {
					t.Errorf("reserving a group: %d", resp.StatusCode)
				}
			case 2: // a group name of its own
				upload(uint64(i), 2048, http.Header{"X-Upload-Group": {fmt.Sprintf("flood-%d", i%50)}})
			}
		})
	}()

	const members = 6 // past max_group_uploads (4): the last two stay on their own
	owner := http.Header{"X-Upload-Group": {group.Group}, "X-Upload-Group-Token": {group.Token}}
	var ownerIDs sync.Map
	var wg sync.WaitGroup
	for i := range members {
		wg.Go(func() {
			if id, answer := upload(uint64(1_000_000+i), 64<<10, owner); answer != nil && answer.Get("X-Upload-Group-Token") == group.Token {
				ownerIDs.Store(id, true)
			}
		})
	}
	f.witness()
	wg.Wait()
	<-flood
	if stolen.Load() != 0 {
		t.Errorf("%d flood uploads got the owner's group token", stolen.Load())
	}

	req, _ := http.NewRequest(http.MethodGet, px.base+statusPath+"?group="+group.Group, nil)
	req.Header.Set("Authorization", "Bearer "+group.Token)
	resp, err = px.h1.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var g caddyprogress.GroupStatus
	json.NewDecoder(resp.Body).Decode(&g)
	resp.Body.Close()
	if g.Status != "complete" || len(g.Uploads) != 4 || g.Received != 4*(64<<10) {
		t.Errorf("the owner's group: %s with %d members, %d bytes; want complete with 4 of the owner's uploads (max_group_uploads)", g.Status, len(g.Uploads), g.Received)
	}
	for _, u := range g.Uploads {
		if _, ok := ownerIDs.Load(u.ID); !ok {
			t.Errorf("the owner's group holds %s, not one of the owner's uploads", u.ID)
		}
	}
	f.end()
}
