package resumable

import (
	"strings"
	"testing"
)

// TestCORSOriginsValidate checks the cors_origins values Validate takes
// (from JSON) and the errors it gives: each names the directive and the
// value, and says what is expected.
func TestCORSOriginsValidate(t *testing.T) {
	tests := []struct {
		origins []string
		err     string
	}{
		{origins: nil},
		{origins: []string{"*"}},
		{origins: []string{"https://app.example.com"}},
		{origins: []string{"http://127.0.0.1:8080", "https://[::1]:8443", "HTTPS://App.Example.com"}},
		{origins: []string{"https://app.example.com/"}, err: `resumable cors_origins: "https://app.example.com/" is not an origin: expected * or scheme://host[:port] with no path, e.g. https://app.example.com`},
		{origins: []string{"https://app.example.com/path"}, err: `"https://app.example.com/path" is not an origin`},
		{origins: []string{"https://app.example.com?x=1"}, err: `"https://app.example.com?x=1" is not an origin`},
		{origins: []string{"https://app.example.com#x"}, err: `"https://app.example.com#x" is not an origin`},
		{origins: []string{"https://user@app.example.com"}, err: `"https://user@app.example.com" is not an origin`},
		{origins: []string{"https://app.example.com:"}, err: `"https://app.example.com:" is not an origin`},
		{origins: []string{"https://app.example.com:port"}, err: `"https://app.example.com:port" is not an origin`},
		{origins: []string{"app.example.com"}, err: `"app.example.com" is not an origin`},
		{origins: []string{"https://"}, err: `"https://" is not an origin`},
		{origins: []string{""}, err: `"" is not an origin`},
		{origins: []string{"*.example.com"}, err: `"*.example.com" is not an origin`},
		{origins: []string{"https://a.example", "*"}, err: `resumable cors_origins: "*" allows every origin and must stand alone, not next to "https://a.example *"`},
	}
	for _, tt := range tests {
		c := Config{Path: "/files/", DeliverTo: "/upload", CORSOrigins: tt.origins}
		c.SetDefaults("t")
		err := c.Validate()
		if tt.err == "" {
			if err != nil {
				t.Errorf("%q: %v", tt.origins, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%q: error %v, want one with %q", tt.origins, err, tt.err)
		}
	}
}

// TestCORSConfig checks what cors_origins becomes in tusd's CORS
// settings: off without origins; exact origins matched whole (no prefix,
// suffix or regexp meaning of their dots), with credentials; "*" any
// origin without credentials; our headers allowed and exposed.
func TestCORSConfig(t *testing.T) {
	off := (&Config{}).corsConfig("X-Upload-ID")
	if !off.Disable {
		t.Fatalf("no cors_origins: %+v, want CORS off", off)
	}

	exact := (&Config{CORSOrigins: []string{"https://app.example.com", "http://127.0.0.1:8080"}}).corsConfig("X-My-ID")
	if exact.Disable || !exact.AllowCredentials {
		t.Fatalf("exact origins: %+v, want CORS on with credentials", exact)
	}
	for origin, want := range map[string]bool{
		"https://app.example.com":                  true,
		"https://APP.example.com":                  true,
		"http://127.0.0.1:8080":                    true,
		"https://appxexample.com":                  false, // the dot is not a wildcard
		"https://app.example.com.evil.com":         false,
		"https://evil.com?https://app.example.com": false,
		"http://app.example.com":                   false,
		"http://127.0.0.1:80800":                   false,
		"http://127.0.0.1":                         false,
		"null":                                     false,
	} {
		if got := exact.AllowOrigin.MatchString(origin); got != want {
			t.Errorf("origin %q allowed: %v, want %v", origin, got, want)
		}
	}
	for _, h := range []string{"Tus-Resumable", "Upload-Offset", "X-Upload-Token", "X-Upload-Group", "X-Upload-Group-Token", "X-My-ID"} {
		if !strings.Contains(exact.AllowHeaders, h) {
			t.Errorf("allowed request headers %q lack %s", exact.AllowHeaders, h)
		}
	}
	for _, h := range []string{"Location", "Upload-Offset", "Upload-Length", "Tus-Resumable", "Tus-Version", "X-Upload-Token", "X-Upload-Group-Token", "X-My-ID"} {
		if !strings.Contains(exact.ExposeHeaders, h) {
			t.Errorf("exposed headers %q lack %s", exact.ExposeHeaders, h)
		}
	}
	for _, m := range []string{"POST", "HEAD", "PATCH", "DELETE", "OPTIONS"} {
		if !strings.Contains(exact.AllowMethods, m) {
			t.Errorf("allowed methods %q lack %s", exact.AllowMethods, m)
		}
	}

	anyOne := (&Config{CORSOrigins: []string{"*"}}).corsConfig("X-Upload-ID")
	if anyOne.Disable || anyOne.AllowCredentials || !anyOne.AllowOrigin.MatchString("https://anything.example") {
		t.Fatalf("*: %+v, want CORS on for any origin, without credentials", anyOne)
	}
}

// TestCORSOriginsMustAgreeInASharedDir checks that handlers sharing a
// dir must name the same cors_origins.
func TestCORSOriginsMustAgreeInASharedDir(t *testing.T) {
	a := Config{CORSOrigins: []string{"https://a.example"}}
	b := Config{CORSOrigins: []string{"https://b.example"}}
	if got := a.differsFrom(&b); !strings.HasPrefix(got, "cors_origins (https://a.example in one, https://b.example in the other)") {
		t.Errorf("differsFrom: %q", got)
	}
	if got := a.differsFrom(&a); got != "" {
		t.Errorf("differsFrom itself: %q", got)
	}
}
