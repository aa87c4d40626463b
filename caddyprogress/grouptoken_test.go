package caddyprogress

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// privateGroupOptions is status_access token with client_ids off and a
// cookie token (the setting of issue 15's probe), and two members at
// most per group.
const privateGroupOptions = "\t\tstatus_access token\n\t\ttoken_secret " + testSecret +
	"\n\t\ttoken_cookie upload_token\n\t\tclient_ids off\n\t\tmax_group_uploads 2"

// reserveGroup reserves a group with POST <status_path>?group.
func (p *proxy) reserveGroup(t testing.TB) (*http.Response, groupReservation) {
	t.Helper()
	resp, body := p.upload(t, http.MethodPost, DefaultStatusPath+"?group", nil, 0, nil)
	var res groupReservation
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatalf("group reservation: %d %s: %v", resp.StatusCode, body, err)
	}
	return resp, res
}

// groupWithToken reads a group's status with its token.
func (p *proxy) groupWithToken(t testing.TB, group string) (int, GroupStatus) {
	t.Helper()
	resp, body := p.getWith(t, DefaultStatusPath+"?group="+group, bearer(tokenFor(groupToken, group)))
	var g GroupStatus
	if err := json.Unmarshal([]byte(body), &g); err != nil {
		t.Fatalf("group status: %d %s: %v", resp.StatusCode, body, err)
	}
	return resp.StatusCode, g
}

// abortUpload sends an upload that announces 1000 bytes, sends 10 and
// hangs up: it ends in error or aborted.
func (p *proxy) abortUpload(t testing.TB, header http.Header) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(p.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	var extra strings.Builder
	for k, v := range header {
		fmt.Fprintf(&extra, "%s: %s\r\n", k, v[0])
	}
	fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n%s\r\n0123456789", extra.String())
	time.Sleep(50 * time.Millisecond)
	conn.Close()
}

// Issue 15, finding 4: a stranger who names another's group neither
// gets its token nor joins it: the upload is tracked on its own, and
// its answer is the same whether the group exists or not. So it cannot
// list the members, turn the group to error, or push the owner's
// uploads out by filling max_group_uploads.
func TestStrangerCannotJoinAGroup(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, privateGroupOptions, up.host)
	const group = "batch-1"
	owner := http.Header{"X-Upload-Group": {group}, "X-Upload-Group-Token": {tokenFor(groupToken, group)}}

	// the owner's first upload, held in flight
	data := payload(64 << 10)
	held := &pacedReader{data: data, chunk: 4 << 10, stopAt: 8 << 10, release: make(chan struct{})}
	release := sync.OnceFunc(func() { close(held.release) })
	t.Cleanup(release) // a failing test does not wait on the held upload
	firstDone := make(chan *http.Response, 1)
	go func() {
		resp, _ := p.upload(t, http.MethodPost, "/", held, int64(len(data)), owner)
		firstDone <- resp
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, g := p.groupWithToken(t, group); code == 200 && len(g.Uploads) == 1 && g.Uploads[0].Received > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the owner's upload never showed in its group")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// strangers: no token, a wrong one, the group's name as its token
	// place; and for comparison, a group nobody uses
	answers := map[string]http.Header{}
	for name, header := range map[string]http.Header{
		"no token":             {"X-Upload-Group": {group}},
		"a wrong token":        {"X-Upload-Group": {group}, "X-Upload-Group-Token": {"wrong"}},
		"another group's":      {"X-Upload-Group": {group}, "X-Upload-Group-Token": {tokenFor(groupToken, "other")}},
		"the upload token":     {"X-Upload-Group": {group}, "Authorization": {"Bearer " + tokenFor(uploadToken, group)}},
		"an unused group name": {"X-Upload-Group": {"nobody-uses-this"}},
	} {
		resp, body := p.upload(t, http.MethodPost, "/", strings.NewReader("stranger"), 8, header)
		id := resp.Header.Get("X-Upload-ID")
		if resp.StatusCode != 200 || string(body) != `{"bytes":8}` {
			t.Fatalf("stranger with %s: %d %s; want the upload let through", name, resp.StatusCode, body)
		}
		if tok := resp.Header.Get("X-Upload-Group-Token"); tok != "" {
			t.Fatalf("stranger with %s got a group token %q", name, tok)
		}
		got, _ := up.get(id)
		if got.header.Get("X-Upload-Group") != "" || got.header.Get("X-Upload-Group-Token") != "" {
			t.Fatalf("stranger with %s: the backend saw X-Upload-Group %q", name, got.header.Get("X-Upload-Group"))
		}
		answers[name] = resp.Header
	}
	// the same answer's headers whether the group exists or not
	names := func(h http.Header) string {
		var out []string
		for k := range h {
			if k != "Date" {
				out = append(out, k)
			}
		}
		slices.Sort(out)
		return fmt.Sprint(out)
	}
	if a, b := names(answers["no token"]), names(answers["an unused group name"]); a != b {
		t.Errorf("answer headers differ between an existing group (%s) and an unused name (%s)", a, b)
	}

	// a stranger's broken upload and a flood up to max_group_uploads
	p.abortUpload(t, http.Header{"X-Upload-Group": {group}})
	for range 3 {
		p.upload(t, http.MethodPost, "/", strings.NewReader("flood"), 5, http.Header{"X-Upload-Group": {group}})
	}
	// the owner's second upload still joins
	resp, _ := p.upload(t, http.MethodPost, "/", strings.NewReader("second"), 6, owner)
	if resp.Header.Get("X-Upload-Group-Token") != tokenFor(groupToken, group) {
		t.Fatalf("the owner's second upload: group token %q", resp.Header.Get("X-Upload-Group-Token"))
	}
	release()
	first := <-firstDone
	if first.StatusCode != 200 {
		t.Fatalf("the owner's first upload answered %d", first.StatusCode)
	}
	if got, _ := up.get(first.Header.Get("X-Upload-ID")); got.sha256 != sha256Hex(data) {
		t.Fatal("the owner's first upload arrived altered")
	}
	var g GroupStatus
	deadline = time.Now().Add(10 * time.Second)
	for {
		var code int
		if code, g = p.groupWithToken(t, group); code == 200 && g.Status != "uploading" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the group never ended: %+v", g)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if g.Status != "complete" || len(g.Uploads) != 2 || g.Received != int64(len(data)+6) {
		t.Fatalf("the owner's group: %s with %d members, %d bytes; want complete with its 2 uploads, %d bytes",
			g.Status, len(g.Uploads), g.Received, len(data)+6)
	}
}

// A group reservation gives a fresh group ID and, with status_access
// token, its token, before any upload: several uploads started at once
// with it all join the group.
func TestGroupReservation(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, privateGroupOptions, up.host)
	resp, res := p.reserveGroup(t)
	if resp.StatusCode != http.StatusCreated || len(res.Group) != 22 || validateID(res.Group) != nil || res.Status != "pending" ||
		res.Token != tokenFor(groupToken, res.Group) ||
		resp.Header.Get("X-Upload-Group") != res.Group || resp.Header.Get("X-Upload-Group-Token") != res.Token {
		t.Fatalf("group reservation: %d %+v %v", resp.StatusCode, res, resp.Header)
	}
	if _, again := p.reserveGroup(t); again.Group == res.Group {
		t.Fatal("two reservations got one group ID")
	}
	if resp, body := p.upload(t, http.MethodPost, DefaultStatusPath+"?group=chosen", nil, 0, nil); resp.StatusCode != 400 ||
		!strings.Contains(string(body), "a group reservation makes a fresh group ID") {
		t.Fatalf("a reservation naming its group: %d %s, want 400", resp.StatusCode, body)
	}

	header := http.Header{"X-Upload-Group": {res.Group}, "X-Upload-Group-Token": {res.Token}}
	done := make(chan string, 2)
	for i := range 2 {
		go func() {
			resp, _ := p.upload(t, http.MethodPost, "/", strings.NewReader(strings.Repeat("x", 10+i)), int64(10+i), header)
			done <- resp.Header.Get("X-Upload-Group-Token")
		}()
	}
	for range 2 {
		if tok := <-done; tok != res.Token {
			t.Fatalf("a member's answer carries group token %q, want the reservation's", tok)
		}
	}
	code, g := p.groupWithToken(t, res.Group)
	if code != 200 || len(g.Uploads) != 2 || g.Received != 21 {
		t.Fatalf("the reserved group: %d %+v", code, g)
	}

	// without status_access token: a fresh ID, no token
	p2 := startProxy(t, "", up.host)
	resp, res = p2.reserveGroup(t)
	if resp.StatusCode != http.StatusCreated || len(res.Group) != 22 || res.Token != "" || resp.Header.Get("X-Upload-Group-Token") != "" {
		t.Fatalf("group reservation with status_access id: %d %+v", resp.StatusCode, res)
	}
}

// Issue 15, finding 9: with status_access token and client_ids on, an
// ID a client names is kept only with its token. A stranger naming
// another's ID, live or finished, gets a fresh ID, as for an unused
// one: no 409 that tells it is in use, no record replaced.
func TestClientIDWithoutItsTokenRevealsAndReplacesNothing(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, tokenOptions, up.host)
	const victim = "victim-1"
	owner := http.Header{"X-Upload-Id": {victim}, "X-Upload-Token": {tokenFor(uploadToken, victim)}}

	data := payload(64 << 10)
	held := &pacedReader{data: data, chunk: 4 << 10, stopAt: 8 << 10, release: make(chan struct{})}
	release := sync.OnceFunc(func() { close(held.release) })
	t.Cleanup(release) // a failing test does not wait on the held upload
	ownerDone := make(chan *http.Response, 1)
	go func() {
		resp, _ := p.upload(t, http.MethodPost, "/", held, int64(len(data)), owner)
		ownerDone <- resp
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, body := p.getWith(t, DefaultStatusPath+victim, bearer(tokenFor(uploadToken, victim)))
		if resp.StatusCode == 200 && strings.Contains(body, `"uploading"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the victim's upload never started")
		}
		time.Sleep(10 * time.Millisecond)
	}

	stranger := func(when, id string) {
		t.Helper()
		resp, body := p.upload(t, http.MethodPost, "/", strings.NewReader("evil"), 4, http.Header{"X-Upload-Id": {id}})
		got := resp.Header.Get("X-Upload-ID")
		if resp.StatusCode != 200 || string(body) != `{"bytes":4}` || got == id || len(got) != 22 {
			t.Fatalf("%s, a stranger naming %q: %d %s with ID %q; want 200 under a fresh ID", when, id, resp.StatusCode, body, got)
		}
		if resp.Header.Get("X-Upload-Token") != tokenFor(uploadToken, got) {
			t.Fatalf("%s: the stranger's token is not its fresh ID's", when)
		}
	}
	stranger("while the victim uploads", victim)
	stranger("for comparison", "never-used")

	release()
	if resp := <-ownerDone; resp.StatusCode != 200 || resp.Header.Get("X-Upload-ID") != victim {
		t.Fatalf("the victim's upload: %d under %q", resp.StatusCode, resp.Header.Get("X-Upload-ID"))
	}
	stranger("after the victim finished", victim)

	resp, body := p.getWith(t, DefaultStatusPath+victim, bearer(tokenFor(uploadToken, victim)))
	var s Status
	if err := json.Unmarshal([]byte(body), &s); err != nil || resp.StatusCode != 200 || s.Status != "complete" || s.Received != int64(len(data)) {
		t.Fatalf("the victim's record after the strangers: %d %s", resp.StatusCode, body)
	}
	if got, _ := up.get(victim); got.sha256 != sha256Hex(data) {
		t.Fatal("the victim's upload arrived altered")
	}
}
