package caddyprogress

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"

	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/coder/websocket"
	"golang.org/x/net/http2"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// wsMessage is one message of the WebSocket route.
type wsMessage struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

func (m wsMessage) status(t testing.TB) Status {
	t.Helper()
	var s Status
	if err := json.Unmarshal(m.Data, &s); err != nil {
		t.Fatalf("message data %s: %v", m.Data, err)
	}
	return s
}

// wsURL is the ws:// (or wss://) URL of path on the proxy.
func (p *proxy) wsURL(path string) string {
	return "ws" + strings.TrimPrefix(p.base, "http") + path
}

// dialWS opens a WebSocket to path with coder/websocket's client; the
// answer to a refused handshake comes back as resp with err.
func (p *proxy) dialWS(t testing.TB, path string, header http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, p.wsURL(path), &websocket.DialOptions{HTTPClient: p.client, HTTPHeader: header})
	if c != nil {
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

// mustDialWS opens a WebSocket to path, or fails.
func (p *proxy) mustDialWS(t testing.TB, path string) *websocket.Conn {
	t.Helper()
	c, resp, err := p.dialWS(t, path, nil)
	if err != nil {
		t.Fatalf("WebSocket to %s: %v (%v)", path, err, resp)
	}
	return c
}

// readWS reads the next message, or fails after timeout.
func readWS(t testing.TB, c *websocket.Conn, timeout time.Duration) wsMessage {
	t.Helper()
	m, err := tryReadWS(c, timeout)
	if err != nil {
		t.Fatalf("reading a message: %v", err)
	}
	return m
}

func tryReadWS(c *websocket.Conn, timeout time.Duration) (wsMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	typ, data, err := c.Read(ctx)
	if err != nil {
		return wsMessage{}, err
	}
	var m wsMessage
	if typ != websocket.MessageText {
		return m, fmt.Errorf("a %v message, want text", typ)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("message %q is not JSON: %w", data, err)
	}
	return m, nil
}

// readAllWS reads messages until the socket closes, and returns them
// with the close status.
func readAllWS(t testing.TB, c *websocket.Conn, timeout time.Duration) ([]wsMessage, websocket.StatusCode) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var messages []wsMessage
	for {
		m, err := tryReadWS(c, time.Until(deadline))
		if err != nil {
			code := websocket.CloseStatus(err)
			if code == -1 {
				t.Fatalf("socket ended without a close frame after %d messages: %v", len(messages), err)
			}
			return messages, code
		}
		messages = append(messages, m)
	}
}

// refusedWS checks that a handshake to path got code with a JSON error
// containing want, before any upgrade.
func refusedWS(t testing.TB, p *proxy, path string, header http.Header, code int, want string) *http.Response {
	t.Helper()
	c, resp, err := p.dialWS(t, path, header)
	if err == nil || c != nil || resp == nil {
		t.Fatalf("%s: handshake not refused (%v)", path, err)
	}
	body, _ := io.ReadAll(resp.Body)
	var answer map[string]string
	if resp.StatusCode != code || json.Unmarshal(body, &answer) != nil || !strings.Contains(answer["error"], want) {
		t.Fatalf("%s: %d %s; want %d with a JSON error containing %q", path, resp.StatusCode, body, code, want)
	}
	return resp
}

// noWebSocketGoroutines waits until no goroutine runs coder/websocket
// code or the WebSocket route, or fails.
func noWebSocketGoroutines(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var stacks bytes.Buffer
		pprof.Lookup("goroutine").WriteTo(&stacks, 1)
		s := stacks.String()
		if !strings.Contains(s, "github.com/coder/websocket") && !strings.Contains(s, "serveWebSocket") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("WebSocket goroutines left 10s after every socket closed:\n%s", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A WebSocket opened before the upload gets pending, progress and the
// final complete, the same documents as the events and status routes,
// and then a normal closure; the upload reaches the upstream intact and
// nothing is left running.
func TestWebSocketFollowsAnUpload(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "tracker ws\n\t\tinterval 20ms", up.host)
	c := p.mustDialWS(t, DefaultWSPath+"ws-upload")
	pending := readWS(t, c, 5*time.Second)
	if pending.Event != "pending" || string(pending.Data) != `{"id":"ws-upload","status":"pending"}` {
		t.Fatalf("first message %s %s, want pending", pending.Event, pending.Data)
	}
	if n := openStreams("ws"); n != 1 {
		t.Fatalf("%d subscribers counted, want the socket", n)
	}

	data := payload(2 << 20)
	body := &pacedReader{data: data, chunk: 64 << 10, pause: 10 * time.Millisecond}
	resp, _ := p.upload(t, http.MethodPost, "/", body, int64(len(data)), http.Header{"X-Upload-Id": {"ws-upload"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upload answered %d", resp.StatusCode)
	}
	messages, code := readAllWS(t, c, 10*time.Second)
	if code != websocket.StatusNormalClosure {
		t.Fatalf("closed with %v, want a normal closure", code)
	}
	if len(messages) < 2 {
		t.Fatalf("%d messages after pending, want progress then complete", len(messages))
	}
	var last int64
	for _, m := range messages[:len(messages)-1] {
		s := m.status(t)
		if m.Event != "progress" || s.Status != "uploading" && s.Status != "processing" || s.Received < last {
			t.Fatalf("progress message %s %s", m.Event, m.Data)
		}
		last = s.Received
	}
	final := messages[len(messages)-1]
	if final.Event != "complete" || final.status(t).Received != int64(len(data)) {
		t.Fatalf("final message %s %s", final.Event, final.Data)
	}
	if got, _ := up.get("ws-upload"); got.sha256 != sha256Hex(data) {
		t.Fatalf("the upload did not reach the upstream intact")
	}
	statusResp, err := p.client.Get(p.base + DefaultStatusPath + "ws-upload")
	if err != nil {
		t.Fatal(err)
	}
	polled, _ := io.ReadAll(statusResp.Body)
	statusResp.Body.Close()
	if string(polled) != string(final.Data)+"\n" {
		t.Fatalf("final message data %s, the status route %s: want the same document", final.Data, polled)
	}
	sse := p.subscribe(t, "ws-upload").all(t, 5*time.Second)
	if len(sse) != 1 || sse[0].name != "complete" || sse[0].data != string(final.Data) {
		t.Fatalf("the events route's final event %+v, want the same document", sse)
	}
	c.CloseNow()
	noWebSocketGoroutines(t)
	if n := openStreams("ws"); n != 0 {
		t.Fatalf("%d subscribers counted after the socket closed", n)
	}
}

// A socket to an upload that has ended gets its final message and the
// normal closure; one to an ID where nothing starts within wait gets
// pending, then error with status unknown, then the normal closure.
func TestWebSocketEndedAndUnknown(t *testing.T) {
	up := newUpstream(t)
	up.status = http.StatusTeapot
	p := startProxy(t, "wait 300ms", up.host)
	p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {"ws-late"}})
	p.waitForStatus(t, "ws-late", "error")
	messages, code := readAllWS(t, p.mustDialWS(t, DefaultWSPath+"ws-late"), 5*time.Second)
	if len(messages) != 1 || messages[0].Event != "error" || code != websocket.StatusNormalClosure {
		t.Fatalf("an ended upload's socket: %+v, closed %v; want one error message and a normal closure", messages, code)
	}
	if s := messages[0].status(t); s.UpstreamStatus == nil || *s.UpstreamStatus != http.StatusTeapot {
		t.Fatalf("final message %s", messages[0].Data)
	}

	start := time.Now()
	messages, code = readAllWS(t, p.mustDialWS(t, DefaultWSPath+"ws-never"), 5*time.Second)
	if len(messages) != 2 || messages[0].Event != "pending" || messages[1].Event != "error" ||
		string(messages[1].Data) != `{"id":"ws-never","status":"unknown"}` || code != websocket.StatusNormalClosure {
		t.Fatalf("an unknown ID's socket: %+v, closed %v; want pending, error unknown, normal closure", messages, code)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Fatalf("gave up after %s, before wait", waited)
	}
	noWebSocketGoroutines(t)
}

// Every refusal comes before the upgrade, with a status code and a JSON
// error: a bad ID 400, a request that is no upgrade 426, another method
// 405, another origin 403.
func TestWebSocketRefusalsComeBeforeTheUpgrade(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "ws_origins app.example.com", up.host)
	refusedWS(t, p, DefaultWSPath+"bad%20id", nil, http.StatusBadRequest, "upload ID has a character that is not allowed")
	refusedWS(t, p, DefaultWSPath+"?group=bad%2Fgroup", nil, http.StatusBadRequest, "group query parameter: group ID has a character that is not allowed")
	refusedWS(t, p, DefaultWSPath+"fine", http.Header{"Origin": {"http://evil.example"}}, http.StatusForbidden,
		`origin "http://evil.example" may not open a WebSocket here`)
	refusedWS(t, p, DefaultWSPath+"fine", http.Header{"Origin": {"http://app.example.com.evil.example"}}, http.StatusForbidden, "may not open")

	resp, body := p.getWith(t, DefaultWSPath+"fine", nil)
	if resp.StatusCode != http.StatusUpgradeRequired || resp.Header.Get("Upgrade") != "websocket" ||
		!strings.Contains(body, `"error":"this route is a WebSocket`) {
		t.Fatalf("a plain GET: %d %v %s; want 426 with Upgrade and a JSON error", resp.StatusCode, resp.Header, body)
	}
	resp, respBody := p.upload(t, http.MethodPost, DefaultWSPath+"fine", strings.NewReader("x"), 1, nil)
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET" || !strings.Contains(string(respBody), `"error":"method POST not allowed here`) {
		t.Fatalf("a POST: %d %s; want 405", resp.StatusCode, respBody)
	}
	if up.requests.Load() != 0 {
		t.Fatalf("%d refused requests reached the upstream", up.requests.Load())
	}

	// the same host, an allowed origin, and no origin are let in
	for _, origin := range []string{p.base, "https://app.example.com", ""} {
		c, resp, err := p.dialWS(t, DefaultWSPath+"fine", http.Header{"Origin": {origin}})
		if err != nil {
			t.Fatalf("origin %q: %v (%v)", origin, err, resp)
		}
		if m := readWS(t, c, 5*time.Second); m.Event != "pending" {
			t.Fatalf("origin %q: first message %s", origin, m.Event)
		}
		c.CloseNow()
	}
}

// With status_access token, a socket without the token is refused as
// for an unknown ID (404) before the upgrade; with it, as a query
// parameter or a bearer header, it is let in. The subscriber caps apply:
// 503 with Retry-After before the upgrade.
func TestWebSocketTokenAndCaps(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "tracker wscaps\n\t\tstatus_access token\n\t\ttoken_secret "+testSecret+"\n\t\tmax_subscribers_per_upload 1", up.host)
	h := &Handler{Tracker: "wscaps", access: tokenAccess{secret: []byte(testSecret)}}

	c, resp, err := p.dialWS(t, DefaultWSPath+"private", nil)
	if err == nil || c != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("without a token: %v %v, want 404", err, resp)
	}
	if body, _ := io.ReadAll(resp.Body); string(body) != `{"id":"private","status":"unknown"}`+"\n" {
		t.Fatalf("without a token: %s, want the answer for an unknown ID", body)
	}
	refusedWS(t, p, DefaultWSPath+"private?token=wrong", nil, http.StatusNotFound, "") // {"id":"private","status":"unknown"}

	first := p.mustDialWS(t, DefaultWSPath+"private?token="+h.token(uploadToken, "private"))
	readWS(t, first, 5*time.Second)
	resp = refusedWS(t, p, DefaultWSPath+"private", http.Header{"Authorization": {"Bearer " + h.token(uploadToken, "private")}},
		http.StatusServiceUnavailable, "cannot open an event stream: too many event streams follow this upload")
	if resp.Header.Get("Retry-After") == "" {
		t.Fatalf("503 without Retry-After")
	}
	group := p.mustDialWS(t, DefaultWSPath+"?group=team&token="+h.token(groupToken, "team"))
	if m := readWS(t, group, 5*time.Second); m.Event != "pending" || string(m.Data) != `{"group":"team","status":"pending"}` {
		t.Fatalf("group socket with its token: %s %s", m.Event, m.Data)
	}
}

// When Caddy stops, open sockets close with 1001 (going away), and the
// stop does not wait for them.
func TestWebSocketStopClosesGoingAway(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "wait 1m", up.host)
	var sockets []*websocket.Conn
	for i := range 3 {
		c := p.mustDialWS(t, fmt.Sprintf("%swaiting-%d", DefaultWSPath, i))
		readWS(t, c, 5*time.Second) // pending: the socket is open
		sockets = append(sockets, c)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- caddy.Stop() }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("stopping: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("caddy.Stop did not return with WebSockets open")
	}
	for _, c := range sockets {
		if messages, code := readAllWS(t, c, 5*time.Second); len(messages) != 0 || code != websocket.StatusGoingAway {
			t.Fatalf("on stop: %d more messages, closed %v; want 1001 going away", len(messages), code)
		}
	}
	noWebSocketGoroutines(t)
}

// A client that stops reading is dropped after the write timeout, while
// the upload and another socket carry on.
func TestWebSocketStuckClientIsDropped(t *testing.T) {
	saved := eventWriteTimeout
	eventWriteTimeout = 500 * time.Millisecond
	t.Cleanup(func() { eventWriteTimeout = saved }) // after Caddy stopped
	up := newUpstream(t)
	p := startProxy(t, "tracker wsstuck\n\t\tinterval 10ms", up.host)
	const id = "ws-big-form"

	host := strings.TrimPrefix(p.base, "http://")
	stuck, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	fmt.Fprintf(stuck, "GET %s%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", DefaultWSPath, id, host)
	line, err := bufio.NewReader(stuck).ReadString('\n') // then never read again
	if err != nil || !strings.Contains(line, "101") || openStreams("wsstuck") != 1 {
		t.Fatalf("stuck client's answer %q (%v), %d streams", line, err, openStreams("wsstuck"))
	}
	reading := p.mustDialWS(t, DefaultWSPath+id)
	reading.SetReadLimit(4 << 20)
	readWS(t, reading, 5*time.Second) // pending
	type result struct {
		messages []wsMessage
		code     websocket.StatusCode
	}
	read := make(chan result, 1)
	go func() { // reads all along, as a client should, and decodes later
		var raw [][]byte
		var got result
		for {
			_, data, err := reading.Read(context.Background())
			if err != nil {
				got.code = websocket.CloseStatus(err)
				if got.code == -1 {
					t.Errorf("the reading socket failed: %v", err)
				}
				break
			}
			raw = append(raw, data)
		}
		for _, data := range raw {
			var m wsMessage
			if err := json.Unmarshal(data, &m); err != nil {
				t.Errorf("message %.100q: %v", data, err)
			}
			got.messages = append(got.messages, m)
		}
		read <- got
	}()

	body := largeForm(t, curlBoundary) // each message is over half a megabyte
	paced := &pacedReader{data: body, chunk: 4 << 10, pause: 10 * time.Millisecond}
	var wg sync.WaitGroup
	wg.Go(func() {
		resp, _ := p.upload(t, http.MethodPost, "/", paced, int64(len(body)), formHeader(id, curlBoundary))
		if resp.StatusCode != 200 {
			t.Errorf("upload answered %d", resp.StatusCode)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for openStreams("wsstuck") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d streams open 10s into the upload; want the stuck one dropped", openStreams("wsstuck"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, s := p.getStatus(t, id); s.Status != "uploading" {
		t.Fatalf("the stuck socket ended with the upload %s; want it dropped mid-upload", s.Status)
	}
	wg.Wait()
	got := <-read
	messages, code := got.messages, got.code
	if len(messages) == 0 {
		t.Fatalf("reading socket closed %v with no message", code)
	}
	if last := messages[len(messages)-1]; last.Event != "complete" || len(last.status(t).Files) != maxParts || code != websocket.StatusNormalClosure {
		t.Fatalf("reading socket's last message %q with %d files, closed %v", last.Event, len(last.status(t).Files), code)
	}
	if got, _ := up.get(id); got.sha256 != sha256Hex(body) {
		t.Fatalf("the upload did not reach the upstream intact")
	}
	if n := openStreams("wsstuck"); n != 0 {
		t.Fatalf("%d streams counted after both ended", n)
	}
}

// A group's socket gets the group's pending, progress and final
// messages, then the normal closure.
func TestWebSocketFollowsAGroup(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "interval 20ms", up.host)
	c := p.mustDialWS(t, DefaultWSPath+"?group=ws-team")
	if m := readWS(t, c, 5*time.Second); m.Event != "pending" || string(m.Data) != `{"group":"ws-team","status":"pending"}` {
		t.Fatalf("first message %s %s", m.Event, m.Data)
	}
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			data := payload(256 << 10)
			body := &pacedReader{data: data, chunk: 32 << 10, pause: 5 * time.Millisecond}
			p.upload(t, http.MethodPost, "/", body, int64(len(data)),
				http.Header{"X-Upload-Id": {fmt.Sprintf("ws-member-%d", i)}, "X-Upload-Group": {"ws-team"}})
		})
	}
	wg.Wait()
	messages, code := readAllWS(t, c, 10*time.Second)
	final := messages[len(messages)-1]
	var g GroupStatus
	if err := json.Unmarshal(final.Data, &g); err != nil {
		t.Fatal(err)
	}
	if final.Event != "complete" || g.Received != 2*256<<10 || len(g.Uploads) != 2 || code != websocket.StatusNormalClosure {
		t.Fatalf("final group message %s %s, closed %v", final.Event, final.Data, code)
	}
	for _, m := range messages[:len(messages)-1] {
		if m.Event != "progress" {
			t.Fatalf("message before the final one: %s", m.Event)
		}
	}
}

// On an HTTPS site that speaks HTTP/2, the WebSocket runs over HTTP/1.1
// (Go's HTTP/2 server does not offer RFC 8441 by default), on the same
// port, while the upload and the status go over HTTP/2.
func TestWebSocketOnAnHTTP2Site(t *testing.T) {
	up := newUpstream(t)
	site := fmt.Sprintf("https://127.0.0.1:%d", testcaddy.FreePort(t))
	testcaddy.Run(t, testcaddy.GlobalOptions+siteBlock(site, "", up.host))
	p := &proxy{base: site, client: h2Client()}
	deadline := time.Now().Add(20 * time.Second)
	for { // the site's certificate may still be on its way
		resp, err := p.client.Get(site + DefaultStatusPath + "ws-h2")
		if err == nil {
			resp.Body.Close()
			if resp.ProtoMajor != 2 {
				t.Fatalf("status over HTTP/%d, want HTTP/2", resp.ProtoMajor)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status over HTTPS: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c, resp, err := p.dialWS(t, DefaultWSPath+"ws-h2", nil)
	if err != nil {
		t.Fatalf("wss: %v (%v)", err, resp)
	}
	if resp.ProtoMajor != 1 || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake answered %d over HTTP/%d, want 101 over HTTP/1.1", resp.StatusCode, resp.ProtoMajor)
	}
	readWS(t, c, 5*time.Second) // pending
	data := payload(1 << 20)
	uploadResp, _ := p.upload(t, http.MethodPost, "/", &pacedReader{data: data, chunk: 100_003}, -1, http.Header{"X-Upload-Id": {"ws-h2"}})
	if uploadResp.StatusCode != http.StatusOK || uploadResp.ProtoMajor != 2 {
		t.Fatalf("upload answered %d over HTTP/%d", uploadResp.StatusCode, uploadResp.ProtoMajor)
	}
	messages, code := readAllWS(t, c, 10*time.Second)
	if final := messages[len(messages)-1]; final.Event != "complete" || final.status(t).Received != 1<<20 || code != websocket.StatusNormalClosure {
		t.Fatalf("final message %s %s, closed %v", final.Event, final.Data, code)
	}
}

// ws_path off passes the route's requests to the next handler.
func TestWebSocketOff(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "ws_path off", up.host)
	resp, body := p.getWith(t, DefaultWSPath+"x", nil)
	if resp.StatusCode != http.StatusOK || body != `{"bytes":0}` || up.requests.Load() != 1 {
		t.Fatalf("GET %sx with ws_path off: %d %q; want it passed to the upstream", DefaultWSPath, resp.StatusCode, body)
	}
}

func TestValidateWebSocketRoutes(t *testing.T) {
	for _, tc := range []struct {
		h       Handler
		wantErr string
	}{
		{Handler{WSPath: "/"}, `ws_path "/" would take every request of the site; use a prefix such as /upload/ws/`},
		{Handler{WSPath: "ws"}, `ws_path "ws" must start with / (or be off)`},
		{Handler{WSPath: DefaultEventsPath}, `events_path and ws_path are both "/upload/events/"`},
		{Handler{WSPath: "/upload/"}, `ws_path "/upload/" is a prefix of status_path "/upload/status/"`},
		{Handler{WSPath: "/upload/status/ws/"}, `status_path "/upload/status/" is a prefix of ws_path "/upload/status/ws/"`},
		{Handler{NginxReportPath: DefaultWSPath}, "nginx_report_path and ws_path are both"},
		{Handler{WSOrigins: []string{"*"}}, "ws_origins *: would let a page of any site"},
		{Handler{WSOrigins: []string{"[a-"}}, `ws_origins "[a-" is not a valid pattern`},
	} {
		tc.h.setDefaults()
		err := tc.h.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%+v: error %v, want one containing %q", tc.h, err, tc.wantErr)
		}
	}
	for _, h := range []Handler{
		{WSPath: routeOff, StatusPath: "/upload/"},
		{WSPath: "/progress/ws/", WSOrigins: []string{"*.example.com", "https://app.example.net"}},
	} {
		h.setDefaults()
		h.EventsPath = routeOff
		if err := h.Validate(); err != nil {
			t.Errorf("%+v: %v, want it valid", h, err)
		}
	}
}

// An idle socket gets ping frames every keepAliveEvery; a client that
// sends a data message (the server only sends) is closed with 1008.
func TestWebSocketPingsAndRefusesClientMessages(t *testing.T) {
	saved := keepAliveEvery
	keepAliveEvery = 50 * time.Millisecond
	t.Cleanup(func() { keepAliveEvery = saved }) // after Caddy stopped
	up := newUpstream(t)
	p := startProxy(t, "wait 1m", up.host)
	var pings atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, p.wsURL(DefaultWSPath+"idle"), &websocket.DialOptions{
		HTTPClient:     p.client,
		OnPingReceived: func(context.Context, []byte) bool { pings.Add(1); return true },
	})
	if err != nil {
		t.Fatalf("dialing: %v (%v)", err, resp)
	}
	defer c.CloseNow()
	readWS(t, c, 5*time.Second) // pending
	reading := make(chan error, 1)
	go func() { // reading answers the pings
		_, err := tryReadWS(c, 10*time.Second)
		reading <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for pings.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d pings in 5s, want one every 50ms", pings.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		t.Fatalf("writing: %v", err)
	}
	if err := <-reading; websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("after a client message: %v, want a close with 1008", err)
	}
	noWebSocketGoroutines(t)
}

// A config reload closes the old config's sockets with 1001 (going
// away): the client reconnects to the new one.
func TestWebSocketReloadClosesGoingAway(t *testing.T) {
	up := newUpstream(t)
	port := testcaddy.FreePort(t)
	site := fmt.Sprintf("http://127.0.0.1:%d", port)
	testcaddy.Run(t, testcaddy.GlobalOptions+siteBlock(site, "wait 1m", up.host))
	p := &proxy{base: site, client: &http.Client{Transport: &http.Transport{DisableCompression: true}}}
	c := p.mustDialWS(t, DefaultWSPath+"across-reload")
	readWS(t, c, 5*time.Second) // pending
	testcaddy.Load(t, testcaddy.GlobalOptions+siteBlock(site, "wait 2m", up.host))
	if messages, code := readAllWS(t, c, 10*time.Second); len(messages) != 0 || code != websocket.StatusGoingAway {
		t.Fatalf("on reload: %d more messages, closed %v; want 1001 going away", len(messages), code)
	}
	again := p.mustDialWS(t, DefaultWSPath+"across-reload")
	if m := readWS(t, again, 5*time.Second); m.Event != "pending" {
		t.Fatalf("after the reload: %s, want pending", m.Event)
	}
}

// Go's HTTP/2 server offers RFC 8441's extended CONNECT only with
// GODEBUG=http2xconnect=1 (off by default): without it, a client cannot
// open a WebSocket over HTTP/2 at all; with it, a browser would, and
// coder/websocket cannot serve that, so the route refuses it before
// anything else: 405, GET only. The test runs itself again in a child
// process with that GODEBUG, as it is read once when a process starts.
func TestWebSocketOverExtendedConnectIsRefused(t *testing.T) {
	if strings.Contains(os.Getenv("GODEBUG"), "http2xconnect=1") {
		resp, err := extendedConnect(t)
		if err != nil {
			t.Fatalf("extended CONNECT with http2xconnect=1: %v", err)
		}
		defer resp.Body.Close()
		answer, _ := io.ReadAll(resp.Body)
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET" ||
			!strings.Contains(string(answer), `"error":"method CONNECT not allowed here`) {
			t.Fatalf("extended CONNECT answered %d over HTTP/%d: %s; want 405 with a JSON error", resp.StatusCode, resp.ProtoMajor, answer)
		}
		return
	}
	if resp, err := extendedConnect(t); err == nil || !strings.Contains(err.Error(), "extended connect not supported by peer") {
		t.Fatalf("extended CONNECT by default: %v %v; want it not offered", err, resp)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestWebSocketOverExtendedConnectIsRefused$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "GODEBUG=http2xconnect=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestWebSocketOverExtendedConnectIsRefused") {
		t.Fatalf("the child process with GODEBUG=http2xconnect=1: %v\n%s", err, out)
	}
}

// extendedConnect runs an HTTPS site and sends it an RFC 8441 extended
// CONNECT for a WebSocket to the WebSocket route.
func extendedConnect(t *testing.T) (*http.Response, error) {
	t.Helper()
	up := newUpstream(t)
	site := fmt.Sprintf("https://127.0.0.1:%d", testcaddy.FreePort(t))
	testcaddy.Run(t, testcaddy.GlobalOptions+siteBlock(site, "", up.host))
	// net/http's Transport refuses a :protocol header; x/net's HTTP/2
	// transport sends it, and fails if the server did not offer
	// extended CONNECT.
	h2 := &http2.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // Caddy's internal CA, made for this test
	t.Cleanup(h2.CloseIdleConnections)
	deadline := time.Now().Add(20 * time.Second)
	for { // the site's certificate may still be on its way
		req, _ := http.NewRequest(http.MethodGet, site+DefaultStatusPath+"x", nil)
		resp, err := h2.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status over HTTPS: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	body, toServer := io.Pipe()
	t.Cleanup(func() { toServer.Close() })
	req, err := http.NewRequest(http.MethodConnect, site+DefaultWSPath+"extended", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(":protocol", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	return h2.RoundTrip(req)
}

// Caddy's server timeouts (timeouts { read_body, write }) bound a
// request, not a socket: Go's server lifts the connection's deadlines
// when it is hijacked, and the socket's writes have their own timeout.
func TestWebSocketOutlivesServerTimeouts(t *testing.T) {
	up := newUpstream(t)
	port := testcaddy.FreePort(t)
	site := fmt.Sprintf("http://127.0.0.1:%d", port)
	global := strings.Replace(testcaddy.GlobalOptions, "\tadmin off\n",
		"\tadmin off\n\tservers {\n\t\ttimeouts {\n\t\t\tread_body 300ms\n\t\t\twrite 300ms\n\t\t}\n\t}\n", 1)
	testcaddy.Run(t, global+siteBlock(site, "wait 1s", up.host))
	p := &proxy{base: site, client: &http.Client{Transport: &http.Transport{DisableCompression: true}}}
	messages, code := readAllWS(t, p.mustDialWS(t, DefaultWSPath+"slow"), 5*time.Second)
	if len(messages) != 2 || messages[1].Event != "error" || code != websocket.StatusNormalClosure {
		t.Fatalf("after 1s past 300ms timeouts: %+v, closed %v; want pending, error unknown, normal closure", messages, code)
	}
}
