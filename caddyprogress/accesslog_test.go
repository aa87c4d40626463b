package caddyprogress

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// The access log filter of the README ("Tokens and upload URLs in access
// logs"), run as it is written in real Caddy writing a real log file:
// with a plain log, the tokens, the tus upload URL and the IDs of a
// session (a reservation, a group, a plain upload, status reads with the
// token in each place, an event stream, the nginx report, a tus upload)
// are in the file; with the README's filter, none is, and the lines are
// there, redacted. The snippet is caddy fmt-clean.
func TestAccessLogFilterRemovesTokensAndUploadURLs(t *testing.T) {
	snippet := readmeBlock(t, "format filter {")
	if formatted := string(caddyfile.Format([]byte(snippet))); formatted != snippet {
		t.Errorf("the README's log snippet is not caddy fmt-clean; caddy fmt makes it:\n%s", formatted)
	}
	const output = "output file /var/log/caddy/access.log"
	if !strings.Contains(snippet, output) {
		t.Fatalf("the README's log snippet has no %q line:\n%s", output, snippet)
	}

	plainPath := filepath.Join(t.TempDir(), "plain.log")
	plain, secrets := accessLogOf(t, "log {\n\t\toutput file "+plainPath+"\n\t}")
	for _, s := range secrets {
		if !strings.Contains(plain, s.value) {
			t.Errorf("the plain access log lacks %s %q: the session shows nothing to remove", s.what, s.value)
		}
	}

	filteredPath := filepath.Join(t.TempDir(), "filtered.log")
	filtered, secrets := accessLogOf(t, strings.Replace(snippet, output, "output file "+filteredPath, 1))
	for _, s := range secrets {
		if strings.Contains(filtered, s.value) {
			t.Errorf("the filtered access log shows %s %q", s.what, s.value)
		}
	}
	for _, want := range []string{`"uri":"/files/REDACTED"`, `"uri":"/upload/status/REDACTED?token=REDACTED"`,
		`"uri":"/upload/events/REDACTED?token=REDACTED"`, `X-Progress-ID=REDACTED`, `"Location":["http://127.0.0.1:`} {
		if !strings.Contains(filtered, want) {
			t.Errorf("the filtered access log has no %s", want)
		}
	}
	if t.Failed() {
		t.Logf("filtered access log:\n%s", filtered)
	}
}

// secret is something a session's requests or answers carry that the
// access log must not keep.
type secret struct{ what, value string }

// accessLogOf runs Caddy with status_access token, the nginx report and
// resumable uploads at /files/, logBlock in the site, runs a session of
// requests through it, and returns the access log once it has a line
// for each request, with the tokens and IDs the session saw.
func accessLogOf(t *testing.T, logBlock string) (string, []secret) {
	t.Helper()
	up := newUpstream(t)
	options := tokenOptions + "\n\t\tresumable /files/ {\n\t\t\tdeliver_to /upload\n\t\t}"
	p := startProxy(t, options, up.host, logBlock)
	defer caddy.Stop()
	var secrets []secret
	requests := 0
	do := func(method, path string, body string, header http.Header) *http.Response {
		t.Helper()
		requests++
		resp, _ := p.upload(t, method, path, strings.NewReader(body), int64(len(body)), header)
		for _, name := range []string{uploadTokenHeader, groupTokenHeader} {
			if v := resp.Header.Get(name); v != "" {
				secrets = append(secrets, secret{name + " of " + method + " " + path, v})
			}
		}
		return resp
	}

	// a reservation: the ID and its token
	resp := do(http.MethodPost, DefaultStatusPath, "", nil)
	id, token := resp.Header.Get(DefaultIDHeader), resp.Header.Get(uploadTokenHeader)
	if resp.StatusCode != http.StatusCreated || id == "" || token == "" {
		t.Fatalf("reservation: %d, ID %q, token %q", resp.StatusCode, id, token)
	}
	secrets = append(secrets, secret{"the upload ID", id})

	// a group: reserved where the route exists, else named by the upload
	group, groupHeader := "access-log-group-1", http.Header{"X-Upload-Group": {"access-log-group-1"}}
	if resp := do(http.MethodPost, DefaultStatusPath+"?group", "", nil); resp.StatusCode == http.StatusCreated {
		group = resp.Header.Get("X-Upload-Group")
		groupHeader = http.Header{"X-Upload-Group": {group}, "X-Upload-Group-Token": {resp.Header.Get(groupTokenHeader)}}
	}
	secrets = append(secrets, secret{"the group ID", group})

	// the upload, showing its ID's token
	header := groupHeader.Clone()
	header.Set(DefaultIDHeader, id)
	header.Set(uploadTokenHeader, token)
	if resp := do(http.MethodPost, "/upload", "a plain upload", header); resp.StatusCode != http.StatusOK || resp.Header.Get(DefaultIDHeader) != id {
		t.Fatalf("upload: %d, ID %q", resp.StatusCode, resp.Header.Get(DefaultIDHeader))
	}
	var groupToken string
	for _, s := range secrets {
		if strings.HasPrefix(s.what, groupTokenHeader) {
			groupToken = s.value
		}
	}
	if groupToken == "" {
		t.Fatal("no group token in any answer")
	}

	// progress, with the token in each place
	for _, read := range []struct {
		path   string
		header http.Header
	}{
		{DefaultStatusPath + id + "?token=" + token, nil},
		{DefaultStatusPath + id, bearer(token)},
		{DefaultStatusPath + id, http.Header{"Cookie": {"upload_token=" + token}}},
		{DefaultStatusPath + "?group=" + group + "&token=" + groupToken, nil},
		{DefaultEventsPath + id + "?token=" + token, nil},
		{"/progress?X-Progress-ID=" + id + "&token=" + token, nil},
		{"/progress", http.Header{"X-Progress-Id": {id}, "Authorization": {"Bearer " + token}}},
	} {
		if resp := do(http.MethodGet, read.path, "", read.header); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d", read.path, resp.StatusCode)
		}
	}

	// a tus upload: creation, its bytes, a HEAD, each showing the token
	resp = do(http.MethodPost, "/files/", "", http.Header{"Tus-Resumable": {"1.0.0"}, "Upload-Length": {"11"}})
	location, tusToken := resp.Header.Get("Location"), resp.Header.Get(uploadTokenHeader)
	tusID := location[strings.LastIndex(location, "/")+1:]
	if resp.StatusCode != http.StatusCreated || tusID == "" || tusToken == "" {
		t.Fatalf("tus creation: %d, Location %q, token %q", resp.StatusCode, location, tusToken)
	}
	secrets = append(secrets, secret{"the tus upload's ID", tusID})
	tusHeader := http.Header{"Tus-Resumable": {"1.0.0"}, uploadTokenHeader: {tusToken}}
	patch := tusHeader.Clone()
	patch.Set("Upload-Offset", "0")
	patch.Set("Content-Type", "application/offset+octet-stream")
	if resp := do(http.MethodPatch, "/files/"+tusID, "hello world", patch); resp.StatusCode >= 300 {
		t.Fatalf("tus PATCH: %d", resp.StatusCode)
	}
	if resp := do(http.MethodHead, "/files/"+tusID, "", tusHeader); resp.StatusCode != http.StatusOK {
		t.Fatalf("tus HEAD: %d", resp.StatusCode)
	}

	// the log, once it has a line for each request
	path := logPath(t, logBlock)
	deadline := time.Now().Add(10 * time.Second)
	for {
		log, _ := os.ReadFile(path)
		if n := bytes.Count(log, []byte("\n")); n >= requests {
			for i, line := range strings.Split(strings.TrimSpace(string(log)), "\n") {
				if !json.Valid([]byte(line)) {
					t.Fatalf("access log line %d is not JSON: %s", i+1, line)
				}
			}
			return string(log), secrets
		}
		if time.Now().After(deadline) {
			t.Fatalf("the access log has %d lines after 10s; want %d:\n%s", bytes.Count(log, []byte("\n")), requests, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logPath is the file of a log block's "output file" line.
func logPath(t *testing.T, logBlock string) string {
	t.Helper()
	for line := range strings.SplitSeq(logBlock, "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "output" && f[1] == "file" {
			return f[2]
		}
	}
	t.Fatalf("no output file in %s", logBlock)
	return ""
}

// readmeBlock returns the fenced code block of the docs (README.md and
// the pages under docs/) that contains marker, with its final newline.
func readmeBlock(t *testing.T, marker string) string {
	t.Helper()
	pages, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, page := range append([]string{"../README.md"}, pages...) {
		text, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(string(text), "```")
		for i := 1; i < len(parts); i += 2 { // the insides of the fences
			block := strings.TrimPrefix(parts[i], "\n")
			if strings.Contains(block, marker) {
				return block
			}
		}
	}
	t.Fatalf("neither README.md nor docs/ has a code block with %q", marker)
	return ""
}
