package clustertest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// tokenOptions are private progress with a secret both instances share,
// and the nginx report route.
const tokenOptions = "\t\tstatus_access token\n\t\ttoken_secret 0123456789abcdef0123456789abcdef\n\t\tnginx_report_path /progress"

// With status_access token, a progress read without the upload's (or
// the group's) token is answered before anything is looked up: on every
// route of B (status, events, WebSocket, nginx report, and the group's
// status, events and WebSocket), a token-less read of an upload in
// flight on A makes no Redis lookup (HMGET of its record, HGETALL of
// its group) and no watch (the record's w field stays unset, and A
// publishes nothing of the lone upload), and its answer is the one an
// unknown ID of the same length gets. A read with the token, last,
// shows that the same counters do see a lookup and a watch.
func TestTokenlessReadsLookNothingUp(t *testing.T) {
	rs := startRedis(t)
	up := newUpstream(t)
	a := startInstance(t, "A", rs.URL(), tokenOptions, up.host)
	b := startInstance(t, "B", rs.URL(), tokenOptions, up.host)
	rc := rs.Client(t)
	ctx := context.Background()

	// the lone upload's ID and token come from a reservation on A
	var res struct{ ID, Token string }
	resp, err := a.client.Post(a.base+"/upload/status/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != http.StatusCreated || res.Token == "" {
		t.Fatalf("reservation: %d %+v %v", resp.StatusCode, res, err)
	}
	resp.Body.Close()
	lone := &steppedReader{next: make(chan struct{})}
	loneDone := a.uploadAsync(res.ID, lone, -1, http.Header{"X-Upload-Token": {res.Token}}) // the reserved ID, shown with its token
	defer func() {
		close(lone.next)
		if r := <-loneDone; r.code != http.StatusOK {
			t.Errorf("lone upload: %+v", r)
		}
	}()
	lone.next <- struct{}{}
	waitForBytes(t, up, 16<<10) // claimed and streaming
	loneKey := "upload_progress:{default:" + res.ID + "}:record"
	if st := rc.HGet(ctx, loneKey, "st").Val(); st != "uploading" {
		t.Fatalf("Redis record of the lone upload: st %q, want uploading", st)
	}
	mon := startMonitor(t, rs.Addr())
	mon.through(t, rc) // the window starts

	unknown := strings.Repeat("u", len(res.ID))
	sameAsUnknown(t, b, res.ID, unknown, []route{
		{"status", "/upload/status/%s"},
		{"events", "/upload/events/%s"},
		{"WebSocket", "/upload/ws/%s"},
		{"nginx report (header)", "/progress#%s"},
		{"nginx report (query)", "/progress?X-Progress-ID=%s"},
	})
	if looked := lookups(mon.through(t, rc), res.ID, unknown); len(looked) != 0 {
		t.Errorf("token-less reads of an upload through B looked it up in Redis:\n%s", strings.Join(looked, "\n"))
	}
	if w := rc.HGet(ctx, loneKey, "w").Val(); w != "" {
		t.Errorf("token-less reads through B watched the upload (w = %s)", w)
	}
	if n := counter(t, []*instance{a}, "published_total"); n != 0 {
		t.Errorf("A published %d documents of an upload only token-less readers asked for", n)
	}

	// a group member in flight on A (always published: group routes
	// read the group's hash)
	group, memberHeader := groupFor(t, a, "tokenless-group-1")
	member := &steppedReader{next: make(chan struct{})}
	memberDone := a.uploadAsync("", member, -1, memberHeader)
	defer func() {
		close(member.next)
		if r := <-memberDone; r.code != http.StatusOK {
			t.Errorf("group member upload: %+v", r)
		}
	}()
	member.next <- struct{}{}
	waitForBytes(t, up, 2*16<<10)
	for deadline := time.Now().Add(10 * time.Second); rc.HLen(ctx, "upload_progress:group:{default:"+group+"}:members").Val() != 1; {
		if time.Now().After(deadline) { // a member's document goes with the publisher's next batch
			t.Fatal("Redis holds no member of the group 10s after it started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	sameAsUnknown(t, b, group, strings.Repeat("u", len(group)), []route{
		{"group status", "/upload/status/?group=%s"},
		{"group events", "/upload/events/?group=%s"},
		{"group WebSocket", "/upload/ws/?group=%s"},
	})
	if looked := lookups(mon.through(t, rc), group, strings.Repeat("u", len(group))); len(looked) != 0 {
		t.Errorf("token-less reads of a group through B looked it up in Redis:\n%s", strings.Join(looked, "\n"))
	}

	// the same read with the upload's token looks it up and watches it
	req, _ := http.NewRequest(http.MethodGet, b.base+"/upload/status/"+res.ID, nil)
	req.Header.Set("Authorization", "Bearer "+res.Token)
	resp, err = b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"status":"uploading"`) {
		t.Fatalf("status with the token through B: %d %s", resp.StatusCode, body)
	}
	if looked := lookups(mon.through(t, rc), res.ID); len(looked) == 0 {
		t.Error("a read with the token made no lookup either: the monitor sees nothing")
	}
	if w := rc.HGet(ctx, loneKey, "w").Val(); w == "" {
		t.Error("a read with the token did not watch the upload: the w field tells nothing")
	}
}

// groupFor returns a group for an upload through inst to join, and the
// headers that join it: a group reserved with POST <status_path>?group
// (its ID and, with status_access token, its token), or, where that
// route does not exist (405), a group the upload makes by naming it.
func groupFor(t *testing.T, inst *instance, name string) (string, http.Header) {
	t.Helper()
	resp, err := inst.client.Post(inst.base+"/upload/status/?group", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusMethodNotAllowed {
		return name, http.Header{"X-Upload-Group": {name}}
	}
	var g struct{ Group, Token string }
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil || resp.StatusCode != http.StatusCreated || g.Group == "" {
		t.Fatalf("group reservation: %d %+v %v", resp.StatusCode, g, err)
	}
	return g.Group, http.Header{"X-Upload-Group": {g.Group}, "X-Upload-Group-Token": {g.Token}}
}

// route is a progress route, its path with %s for the ID.
type route struct{ name, path string }

// sameAsUnknown reads each route of inst without a token, for id and
// for unknown (an ID of the same length), and fails where the answers
// differ (the ID aside).
func sameAsUnknown(t *testing.T, inst *instance, id, unknown string, routes []route) {
	t.Helper()
	for _, r := range routes {
		live := tokenlessRead(t, inst, fmt.Sprintf(r.path, id))
		other := strings.ReplaceAll(tokenlessRead(t, inst, fmt.Sprintf(r.path, unknown)), unknown, id)
		if live != other {
			t.Errorf("%s: the answer for %s differs from an unknown ID's:\n%s\nunknown:\n%s", r.name, id, live, other)
		}
		if !strings.HasPrefix(live, "200 ") && !strings.HasPrefix(live, "404 ") {
			t.Errorf("%s: answered %s", r.name, live)
		}
	}
}

// waitForBytes waits until the upstream has received n bytes in all.
func waitForBytes(t *testing.T, up *upstream, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for up.bytes.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the upstream received %d bytes in 10s; want %d", up.bytes.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tokenlessRead GETs path on inst without any token and returns the
// answer's status, headers that matter and body, as one text. A path
// "/progress#<id>" sends the ID in the X-Progress-ID header; a route
// under /upload/ws/ is asked for a WebSocket upgrade.
func tokenlessRead(t *testing.T, inst *instance, path string) string {
	t.Helper()
	header := http.Header{}
	if p, id, ok := strings.Cut(path, "#"); ok {
		path = p
		header.Set("X-Progress-ID", id)
	}
	if strings.HasPrefix(path, "/upload/ws/") {
		header.Set("Connection", "Upgrade")
		header.Set("Upgrade", "websocket")
		header.Set("Sec-WebSocket-Version", "13")
		header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	}
	req, _ := http.NewRequest(http.MethodGet, inst.base+path, nil)
	req.Header = header
	resp, err := inst.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s on %s: %v", path, inst.name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return strconv.Itoa(resp.StatusCode) + " " + resp.Header.Get("Content-Type") + " " + resp.Header.Get("Cache-Control") + "\n" + string(body)
}

// redisMonitor reads Redis's MONITOR stream: every command the server
// runs, in the order it runs them, with its client ("lua" for the
// commands of a script).
type redisMonitor struct {
	lines chan string
	marks int
}

func startMonitor(t *testing.T, addr string) *redisMonitor {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	if !sc.Scan() || sc.Text() != "+OK" { // from here on, every command is seen
		t.Fatalf("MONITOR: %q %v", sc.Text(), sc.Err())
	}
	m := &redisMonitor{lines: make(chan string, 100000)}
	go func() {
		defer close(m.lines)
		for sc.Scan() {
			m.lines <- sc.Text()
		}
	}()
	return m
}

// through sends a marker command and returns the commands Redis ran
// since the previous marker, up to this one: everything a request
// answered before the marker was sent made is in it.
func (m *redisMonitor) through(t *testing.T, rc *redis.Client) []string {
	t.Helper()
	m.marks++
	mark := fmt.Sprintf("tokenless-mark-%d", m.marks)
	if err := rc.Echo(context.Background(), mark).Err(); err != nil {
		t.Fatal(err)
	}
	var seen []string
	timeout := time.After(10 * time.Second)
	for {
		select {
		case line, ok := <-m.lines:
			if !ok {
				t.Fatal("the MONITOR connection ended")
			}
			if strings.Contains(line, `"`+mark+`"`) {
				return seen
			}
			seen = append(seen, line)
		case <-timeout:
			t.Fatalf("MONITOR: no %s within 10s", mark)
		}
	}
}

// lookups are the commands among lines, not run by a script, that read
// a record or a group of one of the IDs (HMGET, HGETALL).
func lookups(lines []string, ids ...string) []string {
	var found []string
	for _, line := range lines {
		if strings.Contains(line, "lua]") {
			continue
		}
		lower := strings.ToLower(line)
		if !strings.Contains(lower, `"hmget"`) && !strings.Contains(lower, `"hgetall"`) {
			continue
		}
		for _, id := range ids {
			if strings.Contains(line, ":"+id+"}") {
				found = append(found, line)
				break
			}
		}
	}
	return found
}
