package caddyprogress

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testcaddy"
)

// testSecret is the token_secret of the token tests, so that they can
// make tokens themselves, e.g. for an ID that was never uploaded.
const testSecret = "a-test-secret-of-more-than-16-bytes"

// tokenFor is the token the handler makes for tracker "default" and
// testSecret.
func tokenFor(kind, id string) string {
	h := Handler{Tracker: DefaultTracker, access: tokenAccess{secret: []byte(testSecret)}}
	return h.token(kind, id)
}

// getWith asks path with the given headers and returns the response and
// its exact body.
func (p *proxy) getWith(t testing.TB, path string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, p.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading GET %s: %v", path, err)
	}
	return resp, string(body)
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

const tokenOptions = "\t\tstatus_access token\n\t\ttoken_secret " + testSecret + "\n\t\ttoken_cookie upload_token\n" + nginxOptions

func TestTokenGuardsStatusEventsNginxAndGroups(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, tokenOptions, up.host)

	data := payload(100 << 10)
	// the upload shows the tokens of the ID and group it names (issue 15:
	// without them it would get a fresh ID and no group)
	resp, _ := p.upload(t, http.MethodPost, "/", strings.NewReader(string(data)), int64(len(data)),
		http.Header{"X-Upload-Id": {"private-1"}, "X-Upload-Token": {tokenFor(uploadToken, "private-1")},
			"X-Upload-Group": {"private-group"}, "X-Upload-Group-Token": {tokenFor(groupToken, "private-group")}})
	if resp.StatusCode != 200 {
		t.Fatalf("upload answered %d", resp.StatusCode)
	}
	token := resp.Header.Get("X-Upload-Token")
	groupTok := resp.Header.Get("X-Upload-Group-Token")
	if token != tokenFor(uploadToken, "private-1") || groupTok != tokenFor(groupToken, "private-group") {
		t.Fatalf("upload response tokens %q, %q; want HMACs of the IDs", token, groupTok)
	}
	if got, _ := up.get("private-1"); got.sha256 != sha256Hex(data) {
		t.Fatal("upload arrived altered")
	}

	// Without a token the answer is byte for byte that of an unknown ID
	// (asked with its own valid token, so really unknown).
	unknownResp, unknownBody := p.getWith(t, DefaultStatusPath+"never-uploaded", bearer(tokenFor(uploadToken, "never-uploaded")))
	if unknownResp.StatusCode != 404 {
		t.Fatalf("unknown ID with its token: %d %s", unknownResp.StatusCode, unknownBody)
	}
	wantHidden := strings.ReplaceAll(unknownBody, "never-uploaded", "private-1")
	for name, header := range map[string]http.Header{
		"no token":                   nil,
		"another ID's token":         bearer(tokenFor(uploadToken, "private-2")),
		"the group's token":          bearer(groupTok),
		"a token with a bad scheme":  {"Authorization": {"Basic " + token}},
		"a cookie of the wrong name": {"Cookie": {"other=" + token}},
	} {
		resp, body := p.getWith(t, DefaultStatusPath+"private-1", header)
		if resp.StatusCode != 404 || body != wantHidden ||
			resp.Header.Get("Content-Type") != unknownResp.Header.Get("Content-Type") ||
			resp.Header.Get("Cache-Control") != unknownResp.Header.Get("Cache-Control") {
			t.Errorf("status with %s: %d %q, want 404 %q as for an unknown ID", name, resp.StatusCode, body, wantHidden)
		}
	}

	// The token is accepted in each of the three places.
	for name, path := range map[string]string{
		"bearer": DefaultStatusPath + "private-1",
		"query":  DefaultStatusPath + "private-1?token=" + token,
		"cookie": DefaultStatusPath + "private-1",
	} {
		var header http.Header
		switch name {
		case "bearer":
			header = bearer(token)
		case "cookie":
			header = http.Header{"Cookie": {"upload_token=" + token}}
		}
		resp, body := p.getWith(t, path, header)
		if resp.StatusCode != 200 || !strings.Contains(body, `"status":"complete"`) {
			t.Errorf("status with the token as %s: %d %s", name, resp.StatusCode, body)
		}
	}

	// Events: 404 without the token, the final event with it.
	if resp, body := p.getWith(t, DefaultEventsPath+"private-1", nil); resp.StatusCode != 404 || body != wantHidden {
		t.Errorf("events without a token: %d %q", resp.StatusCode, body)
	}
	events := subscribeURL(t, p.client, p.base+DefaultEventsPath+"private-1?token="+token)
	if ev := events.next(t, 5*time.Second); ev.name != "complete" {
		t.Errorf("events with the token: first event %q, want complete", ev.name)
	}

	// The group's routes take the group's token, and only it.
	wantGroupHidden := `{"group":"private-group","status":"unknown"}` + "\n"
	for name, header := range map[string]http.Header{"no token": nil, "the upload's token": bearer(token)} {
		if resp, body := p.getWith(t, DefaultStatusPath+"?group=private-group", header); resp.StatusCode != 404 || body != wantGroupHidden {
			t.Errorf("group status with %s: %d %q", name, resp.StatusCode, body)
		}
		if resp, body := p.getWith(t, DefaultEventsPath+"?group=private-group", header); resp.StatusCode != 404 || body != wantGroupHidden {
			t.Errorf("group events with %s: %d %q", name, resp.StatusCode, body)
		}
	}
	if resp, body := p.getWith(t, DefaultStatusPath+"?group=private-group&token="+groupTok, nil); resp.StatusCode != 200 || !strings.Contains(body, `"status":"complete"`) {
		t.Errorf("group status with its token: %d %s", resp.StatusCode, body)
	}
	groupEvents := subscribeURL(t, p.client, p.base+DefaultEventsPath+"?group=private-group&token="+groupTok)
	if ev := groupEvents.next(t, 5*time.Second); ev.name != "complete" {
		t.Errorf("group events with the token: first event %q, want complete", ev.name)
	}

	// The nginx report says "starting", as for an unknown ID, without it.
	if body := p.nginxReport(t, "private-1"); body != "{ \"state\" : \"starting\" }\r\n" {
		t.Errorf("nginx report without a token: %q", body)
	}
	if _, body := p.nginxReportGet(t, http.MethodGet, "?X-Progress-ID=private-1", bearer(token)); body != "{ \"state\" : \"done\" }\r\n" {
		t.Errorf("nginx report with the token: %q", body)
	}

	// Invalid IDs are still told so.
	if resp, _ := p.getWith(t, DefaultStatusPath+"bad%20id", nil); resp.StatusCode != 400 {
		t.Errorf("invalid ID without a token: %d, want 400", resp.StatusCode)
	}
}

func TestTokenOfAReservation(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, tokenOptions, up.host)
	resp, body := p.upload(t, http.MethodPost, DefaultStatusPath, nil, 0, nil)
	id := resp.Header.Get("X-Upload-ID")
	want := fmt.Sprintf(`{"id":%q,"status":"pending","token":%q}`+"\n", id, tokenFor(uploadToken, id))
	if resp.StatusCode != 201 || string(body) != want || resp.Header.Get("X-Upload-Token") != tokenFor(uploadToken, id) {
		t.Fatalf("reservation: %d %s %v; want 201 %s", resp.StatusCode, body, resp.Header, want)
	}
	if resp, _ := p.getWith(t, DefaultStatusPath+id, nil); resp.StatusCode != 404 {
		t.Fatalf("reserved ID without its token: %d, want 404", resp.StatusCode)
	}
	if resp, body := p.getWith(t, DefaultStatusPath+id, bearer(tokenFor(uploadToken, id))); resp.StatusCode != 200 || !strings.Contains(body, `"pending"`) {
		t.Fatalf("reserved ID with its token: %d %s", resp.StatusCode, body)
	}
}

// Without token_secret, the secret is made once and kept in Caddy's
// storage: a token stays valid across a reload to another config.
func TestGeneratedTokenSecretIsKeptAcrossReloads(t *testing.T) {
	up := newUpstream(t)
	port := testcaddy.FreePort(t)
	site := fmt.Sprintf("http://127.0.0.1:%d", port)
	testcaddy.Run(t, testcaddy.GlobalOptions+siteBlock(site, "\t\ttracker stored\n\t\tstatus_access token", up.host))
	p := &proxy{base: site, client: &http.Client{}}

	// an ID of the server's (a client's own needs its token, issue 15)
	resp, _ := p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, nil)
	id := resp.Header.Get("X-Upload-Id")
	token := resp.Header.Get("X-Upload-Token")
	if token == "" || token == tokenFor(uploadToken, id) {
		t.Fatalf("token %q", token)
	}
	secretFile := filepath.Join(caddy.AppDataDir(), "upload_progress", "stored", "token_secret")
	if info, err := os.Stat(secretFile); err != nil || info.Size() != 32 {
		t.Fatalf("stored secret %s: %v", secretFile, err)
	}

	// another config, on another port, with the same storage
	port2 := testcaddy.FreePort(t)
	site2 := fmt.Sprintf("http://127.0.0.1:%d", port2)
	testcaddy.Load(t, testcaddy.GlobalOptions+siteBlock(site2, "\t\ttracker stored\n\t\tstatus_access token\n\t\tinterval 50ms", up.host))
	p2 := &proxy{base: site2, client: &http.Client{}}
	if resp, body := p2.getWith(t, DefaultStatusPath+id, bearer(token)); resp.StatusCode != 200 || !strings.Contains(body, `"complete"`) {
		t.Fatalf("after the reload, the token reads %d %s", resp.StatusCode, body)
	}
	resp2, _ := p2.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {id}, "X-Upload-Token": {token}})
	if got := resp2.Header.Get("X-Upload-Token"); got != token || resp2.Header.Get("X-Upload-Id") != id {
		t.Fatalf("the same ID's token changed across the reload: %q, then %q (ID %q)", token, got, resp2.Header.Get("X-Upload-Id"))
	}
}

// loadErr loads a Caddyfile and returns the error, for configs that must
// fail.
func loadErr(t *testing.T, caddyfile string) error {
	t.Helper()
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		return err
	}
	return caddy.Load(cfg, true)
}

func TestTokenSecretFromAnEnvironmentPlaceholder(t *testing.T) {
	up := newUpstream(t)
	const options = "\t\tstatus_access token\n\t\ttoken_secret {env.UPLOAD_PROGRESS_TEST_SECRET}"
	t.Setenv("UPLOAD_PROGRESS_TEST_SECRET", "")
	port := testcaddy.FreePort(t)
	err := loadErr(t, testcaddy.GlobalOptions+siteBlock(fmt.Sprintf("http://127.0.0.1:%d", port), options, up.host))
	if err == nil || !strings.Contains(err.Error(), "token_secret is 0 bytes long") {
		t.Fatalf("an unset secret variable: %v, want a clear error", err)
	}

	t.Setenv("UPLOAD_PROGRESS_TEST_SECRET", testSecret)
	p := startProxy(t, options, up.host)
	resp, _ := p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4,
		http.Header{"X-Upload-Id": {"env-1"}, "X-Upload-Token": {tokenFor(uploadToken, "env-1")}})
	if got := resp.Header.Get("X-Upload-Token"); got != tokenFor(uploadToken, "env-1") || resp.Header.Get("X-Upload-Id") != "env-1" {
		t.Fatalf("token %q, want the HMAC with the variable's secret", got)
	}
}

func TestClientIDsOff(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "\t\tclient_ids off", up.host)
	for name, header := range map[string]http.Header{
		"a valid ID":       {"X-Upload-Id": {"chosen-by-client"}},
		"an invalid ID":    {"X-Upload-Id": {"not valid!"}},
		"an X-Progress-ID": {"X-Progress-Id": {"chosen-too"}},
	} {
		resp, _ := p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, header)
		id := resp.Header.Get("X-Upload-ID")
		if resp.StatusCode != 200 || len(id) != 22 || validateID(id) != nil {
			t.Fatalf("%s: %d with ID %q; want 200 and a fresh 128-bit ID", name, resp.StatusCode, id)
		}
		if got, ok := up.get(id); !ok || got.bytes != 4 {
			t.Fatalf("%s: upstream did not get X-Upload-ID %q", name, id)
		}
		p.waitForStatus(t, id, "complete")
	}
	if code, _ := p.getStatus(t, "chosen-by-client"); code != 404 {
		t.Fatalf("a client-chosen ID was tracked: %d", code)
	}

	// A reservation, made by the server, may be used.
	resp, _ := p.upload(t, http.MethodPost, DefaultStatusPath, nil, 0, nil)
	reserved := resp.Header.Get("X-Upload-ID")
	resp, _ = p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {reserved}})
	if got := resp.Header.Get("X-Upload-ID"); got != reserved {
		t.Fatalf("upload with the reserved ID %q got ID %q", reserved, got)
	}
	p.waitForStatus(t, reserved, "complete")
	// once used, it is no longer a reservation
	resp, _ = p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Upload-Id": {reserved}})
	if got := resp.Header.Get("X-Upload-ID"); got == reserved {
		t.Fatalf("a used reservation was taken again")
	}
}

func TestRoutesOff(t *testing.T) {
	up := newUpstream(t)
	p := startProxy(t, "\t\tstatus_path off\n\t\tevents_path off\n"+nginxOptions, up.host)
	for _, path := range []string{DefaultStatusPath + "x", DefaultEventsPath + "x", DefaultStatusPath + "?group=g"} {
		before := up.requests.Load()
		resp, body := p.getWith(t, path, nil)
		if resp.StatusCode != 200 || body != `{"bytes":0}` || up.requests.Load() != before+1 {
			t.Errorf("GET %s with the route off: %d %q; want it passed to the upstream", path, resp.StatusCode, body)
		}
	}
	resp, _ := p.upload(t, http.MethodPost, "/", strings.NewReader("data"), 4, http.Header{"X-Progress-Id": {"nginx-only"}})
	if resp.StatusCode != 200 {
		t.Fatalf("upload answered %d", resp.StatusCode)
	}
	if body := p.nginxReport(t, "nginx-only"); body != "{ \"state\" : \"done\" }\r\n" {
		t.Fatalf("nginx report: %q", body)
	}
}

func TestValidateRoutesAndAccess(t *testing.T) {
	for _, tc := range []struct {
		h       Handler
		wantErr string
	}{
		{Handler{StatusPath: "/"}, `status_path "/" would take every request of the site; use a prefix such as /upload/status/`},
		{Handler{EventsPath: "/"}, `events_path "/" would take every request of the site; use a prefix such as /upload/events/`},
		{Handler{StatusPath: "/upload/", EventsPath: "/upload/events/"}, `status_path "/upload/" is a prefix of events_path`},
		{Handler{StatusPath: "/progress/status/", EventsPath: "/progress/"}, `events_path "/progress/" is a prefix of status_path`},
		{Handler{NginxReportPath: DefaultStatusPath}, "nginx_report_path and status_path are both"},
		{Handler{NginxReportPath: DefaultEventsPath}, "nginx_report_path and events_path are both"},
		{Handler{IDHeader: "X-Upload(ID)"}, `id_header "X-Upload(ID)" is not a valid header field name`},
		{Handler{IDHeader: "X-Upload-ID\r\n"}, "is not a valid header field name"},
		{Handler{StatusPath: "of"}, `status_path "of" must start with / (or be off)`},
		{Handler{StatusAccess: "secret"}, `status_access "secret": must be id or token`},
		{Handler{TokenSecret: testSecret}, "token_secret and token_cookie need status_access token"},
		{Handler{StatusAccess: accessByToken, TokenCookie: "bad;name"}, `token_cookie "bad;name" is not a valid cookie name`},
	} {
		tc.h.setDefaults()
		err := tc.h.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%+v: error %v, want one containing %q", tc.h, err, tc.wantErr)
		}
	}
	for _, h := range []Handler{
		{StatusPath: routeOff, EventsPath: routeOff, NginxReportPath: "/progress"},
		{StatusAccess: accessByToken, TokenCookie: "upload_token"},
		{StatusPath: "/upload/status/", EventsPath: "/upload/statuses/"},
	} {
		h.setDefaults()
		if err := h.Validate(); err != nil {
			t.Errorf("%+v: %v, want it valid", h, err)
		}
	}
}

func TestCaddyfileAccessSubdirectives(t *testing.T) {
	d := caddyfile.NewTestDispenser(`upload_progress {
		status_access token
		token_secret  {env.UPLOAD_PROGRESS_SECRET}
		token_cookie  upload_token
		client_ids    off
		status_path   off
		events_path   off
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	off := false
	want := Handler{StatusAccess: "token", TokenSecret: "{env.UPLOAD_PROGRESS_SECRET}", TokenCookie: "upload_token",
		ClientIDs: &off, StatusPath: "off", EventsPath: "off"}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("parsed %+v\nwant   %+v", h, want)
	}
	for input, wantErr := range map[string]string{
		"upload_progress {\n client_ids maybe\n}": `client_ids: "maybe" must be on or off`,
		"upload_progress {\n status_access\n}":    "status_access: expected one argument",
		"upload_progress {\n token_secret a b\n}": "token_secret: expected one argument, got more",
	} {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%q: error %v, want one containing %q", input, err, wantErr)
		}
	}
}
