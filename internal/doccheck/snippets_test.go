package doccheck

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	_ "github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// snippet is one fenced code block of a Markdown file.
type snippet struct {
	file string
	line int
	body string
}

// markdownFiles are the README and every page under docs/.
func markdownFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"../../README.md"}
	pages, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	return append(files, pages...)
}

// caddyfileSnippets returns the blocks fenced as ```caddyfile, or fenced
// without a language and shaped like a Caddyfile: a first line that opens
// a block or names this module's directive (JSON, shell and nginx blocks
// are left out).
func caddyfileSnippets(t *testing.T) []snippet {
	t.Helper()
	var out []snippet
	for _, file := range markdownFiles(t) {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var (
			open  bool
			lang  string
			start int
			body  strings.Builder
		)
		for i, line := range strings.Split(string(data), "\n") {
			fenceLang, isFence := strings.CutPrefix(line, "```")
			switch {
			case isFence && !open:
				open, lang, start = true, strings.TrimSpace(fenceLang), i+2
				body.Reset()
			case isFence && open:
				open = false
				if lang == "caddyfile" || (lang == "" && looksLikeCaddyfile(body.String())) {
					out = append(out, snippet{file: filepath.Base(file), line: start, body: body.String()})
				}
			case open:
				body.WriteString(line + "\n")
			}
		}
		if open {
			t.Fatalf("%s:%d: a code fence is never closed", file, start-1)
		}
	}
	return out
}

func looksLikeCaddyfile(body string) bool {
	first, _, _ := strings.Cut(strings.TrimSpace(body), "\n")
	if strings.HasPrefix(first, "{") && strings.Contains(body, `":`) {
		return false // JSON
	}
	return strings.HasSuffix(first, "{") || strings.HasPrefix(first, "upload_progress")
}

// Every Caddyfile snippet is formatted as `caddy fmt` formats it, so that
// a copied snippet does not log "Caddyfile input is not formatted".
func TestCaddyfileSnippetsAreFormatted(t *testing.T) {
	snippets := caddyfileSnippets(t)
	if len(snippets) < 10 {
		t.Fatalf("found %d Caddyfile snippets in the docs; the README alone has more: is the detection broken?", len(snippets))
	}
	for _, s := range snippets {
		if syntax.MatchString(s.body) {
			continue // a syntax block aligns its comments, as Caddy's own docs do
		}
		formatted := string(caddyfile.Format([]byte(s.body)))
		if formatted != s.body {
			t.Errorf("%s:%d: the snippet is not as caddy fmt writes it; caddy fmt gives:\n%s", s.file, s.line, formatted)
		}
	}
}

// syntax marks a snippet that shows a directive's syntax (<placeholders>,
// [optional parts]) rather than a config to copy.
var syntax = regexp.MustCompile(`<[a-z_.]+>|\[<`)

// Every whole config among the snippets (a site block) adapts to JSON with
// this module registered, so its directives and values are real ones.
func TestCaddyfileSnippetsAdapt(t *testing.T) {
	t.Setenv("UPLOAD_PROGRESS_SECRET", "0123456789abcdef0123456789abcdef")
	t.Setenv("REDIS_URL", "redis://127.0.0.1:6379")
	adapter := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}
	adapted := 0
	for _, s := range caddyfileSnippets(t) {
		if syntax.MatchString(s.body) {
			continue
		}
		_, _, err := adapter.Adapt([]byte(s.body), nil)
		if err != nil && strings.Contains(err.Error(), "directives must appear in a site block") {
			// a fragment that Caddy itself calls one: put it in a site
			_, _, err = adapter.Adapt([]byte(":8080 {\n"+s.body+"}\n"), nil)
		}
		if err != nil {
			t.Errorf("%s:%d: the snippet does not adapt: %v\n%s", s.file, s.line, err, s.body)
			continue
		}
		adapted++
	}
	if adapted < 8 {
		t.Fatalf("adapted %d snippets; the README alone has more whole configs: is the detection broken?", adapted)
	}
}

// The runnable example is formatted too: `caddy run` on it logs no
// "Caddyfile input is not formatted".
func TestCaddyfileExampleIsFormatted(t *testing.T) {
	data, err := os.ReadFile("../../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	if formatted := caddyfile.Format(data); string(formatted) != string(data) {
		t.Errorf("Caddyfile.example is not as caddy fmt writes it; caddy fmt gives:\n%s", formatted)
	}
}
