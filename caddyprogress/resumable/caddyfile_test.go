package resumable

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	tests := []struct {
		input string
		want  Config
		err   string
	}{
		{input: "resumable /files/ {\n deliver_to /upload\n}", want: Config{Path: "/files/", DeliverTo: "/upload"}},
		{input: `resumable /tus/ {
			dir /var/spool/uploads
			max_size 4GiB
			max_disk 100GB
			expire 2h
			reserve_for 10m
			deliver_to /api/upload
			deliver_method put
			deliver_as multipart document
			deliver_retries 3
			ietf_draft
		}`, want: Config{Path: "/tus/", Dir: "/var/spool/uploads", MaxSize: 4 << 30, MaxDisk: 100e9,
			Expire: caddy.Duration(2 * time.Hour), ReserveFor: caddy.Duration(10 * time.Minute), DeliverTo: "/api/upload", DeliverMethod: "PUT",
			DeliverAs: "multipart", DeliverField: "document", DeliverRetries: 3, IETFDraft: true}},
		{input: "resumable /f/ {\n deliver_as raw\n deliver_retries 0\n}", want: Config{Path: "/f/", DeliverAs: "raw", DeliverRetries: -1}},
		{input: "resumable /f/ {\n cors_origins https://app.example.com http://127.0.0.1:8080\n cors_origins https://b.example\n}",
			want: Config{Path: "/f/", CORSOrigins: []string{"https://app.example.com", "http://127.0.0.1:8080", "https://b.example"}}},
		{input: "resumable /f/ {\n cors_origins *\n}", want: Config{Path: "/f/", CORSOrigins: []string{"*"}}},
		{input: "resumable /f/ {\n cors_origins\n}", err: "resumable cors_origins: expected one or more origins"},
		{input: "resumable /f/ {\n cors_origins https://app.example.com/upload\n}",
			err: `resumable cors_origins: "https://app.example.com/upload" is not an origin: expected * or scheme://host[:port] with no path`},
		{input: "resumable /f/ {\n cors_origins app.example.com\n}", err: `"app.example.com" is not an origin`},
		{input: "resumable /f/ {\n cors_origins * https://app.example.com\n}", err: `"*" allows every origin and must stand alone`},
		{input: "resumable {\n}", err: "expected the tus endpoint path"},
		{input: "resumable /a/ /b/", err: "expected one path"},
		{input: "resumable /f/ {\n max_size lots\n}", err: "is not a size"},
		{input: "resumable /f/ {\n expire 0s\n}", err: "longer than zero"},
		{input: "resumable /f/ {\n reserve_for soon\n}", err: "reserve_for: \"soon\" is not a duration"},
		{input: "resumable /f/ {\n deliver_as json\n}", err: "raw or multipart"},
		{input: "resumable /f/ {\n deliver_retries -2\n}", err: "whole number"},
		{input: "resumable /f/ {\n ietf_draft yes\n}", err: "no argument"},
		{input: "resumable /f/ {\n colour blue\n}", err: "unrecognized resumable subdirective"},
		{input: "resumable /f/ {\n s3 s3://uploads/tus/in {\n  endpoint http://127.0.0.1:7070\n  region eu-west-1\n  path_style\n }\n deliver_to /u\n}",
			want: Config{Path: "/f/", DeliverTo: "/u", S3: &S3Config{URL: "s3://uploads/tus/in", Endpoint: "http://127.0.0.1:7070", Region: "eu-west-1", PathStyle: true}}},
		{input: "resumable /f/ {\n s3 s3://uploads\n}", want: Config{Path: "/f/", S3: &S3Config{URL: "s3://uploads"}}},
		{input: "resumable /f/ {\n s3\n}", err: "resumable s3: expected one bucket URL"},
		{input: "resumable /f/ {\n s3 uploads\n}", err: `resumable s3 "uploads": expected s3://<bucket> or s3://<bucket>/<prefix>`},
		{input: "resumable /f/ {\n s3 s3://user:secret@uploads\n}", err: "expected s3://<bucket>"},
		{input: "resumable /f/ {\n s3 s3://ab\n}", err: `bucket "ab" must be 3 to 63 characters long`},
		{input: "resumable /f/ {\n s3 s3://-uploads\n}", err: "must start and end with a letter or digit"},
		{input: "resumable /f/ {\n s3 s3://uploads/a//b\n}", err: `prefix "a//b" must be names`},
		{input: "resumable /f/ {\n s3 s3://uploads/a%20b\n}", err: "prefix"},
		{input: "resumable /f/ {\n s3 s3://uploads {\n  endpoint 127.0.0.1:7070\n }\n}", err: `resumable s3 endpoint "127.0.0.1:7070": expected an http:// or https:// URL`},
		{input: "resumable /f/ {\n s3 s3://uploads {\n  region EU\n }\n}", err: `resumable s3 region "EU"`},
		{input: "resumable /f/ {\n s3 s3://uploads {\n  path_style yes\n }\n}", err: "path_style: expected no argument"},
		{input: "resumable /f/ {\n s3 s3://uploads {\n  bucket x\n }\n}", err: `unrecognized resumable s3 subdirective "bucket"`},
		{input: "resumable /f/ {\n s3 s3://uploads\n s3 s3://other\n}", err: "resumable s3: set once"},
	}
	for _, tt := range tests {
		var c Config
		d := caddyfile.NewTestDispenser(tt.input)
		d.Next()
		err := c.UnmarshalCaddyfile(d)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v, want one with %q", tt.input, err, tt.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(c, tt.want) {
			t.Errorf("%q: got %+v, %v; want %+v", tt.input, c, err, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	base := func() Config {
		c := Config{Path: "/files/", DeliverTo: "/upload", Dir: "/tmp/x"}
		c.SetDefaults("default")
		return c
	}
	if c := base(); c.Validate() != nil || c.MaxSize != DefaultMaxSize || c.DeliverRetries != 5 || c.DeliverMethod != "POST" ||
		c.ReserveFor != caddy.Duration(5*time.Minute) {
		t.Fatalf("defaults: %+v, %v", c, c.Validate())
	}
	for _, tt := range []struct {
		change func(*Config)
		err    string
	}{
		{func(c *Config) { c.Path = "/files" }, "start and end with /"},
		{func(c *Config) { c.DeliverTo = "" }, "deliver_to"},
		{func(c *Config) { c.DeliverTo = "/files/x" }, "must not be under"},
		{func(c *Config) { c.DeliverAs = "json" }, "raw or multipart"},
		{func(c *Config) { c.DeliverAs, c.DeliverField = "multipart", `a"b` }, "field name"},
		{func(c *Config) { c.MaxDisk = -1 }, "max_disk"},
		{func(c *Config) { c.ReserveFor = -1 }, "reserve_for"},
		{func(c *Config) { c.S3 = &S3Config{URL: "s3://uploads"} }, "dir \"/tmp/x\" and s3 \"s3://uploads\": the uploads live in one store; set one of them"},
		{func(c *Config) { c.Dir, c.S3 = "", &S3Config{URL: "http://uploads"} }, "expected s3://<bucket>"},
	} {
		c := base()
		tt.change(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%+v: %v, want an error with %q", c, err, tt.err)
		}
	}
}

// Two spellings of one bucket name one store; another prefix or
// endpoint is another.
func TestS3KeyNamesTheStore(t *testing.T) {
	key := S3Config{URL: "s3://uploads/tus/", Endpoint: "https://S3.Example.com/"}.Key()
	if want := "s3://uploads/tus/@https://s3.example.com"; key != want {
		t.Fatalf("key %q, want %q", key, want)
	}
	if other := (S3Config{URL: "s3://uploads/tus", Endpoint: "https://s3.example.com"}).Key(); other != key {
		t.Fatalf("one bucket, two spellings: %q and %q", key, other)
	}
	for _, c := range []S3Config{{URL: "s3://uploads/tus2", Endpoint: "https://s3.example.com"}, {URL: "s3://uploads/tus"}} {
		if c.Key() == key {
			t.Fatalf("%+v has the key of another store: %q", c, key)
		}
	}
}

func TestValidateIDAndMetadata(t *testing.T) {
	for _, id := range []string{"0123abcdef", "a-b_c"} {
		if err := validateID(id); err != nil {
			t.Errorf("validateID(%q): %v", id, err)
		}
	}
	for _, id := range []string{"", "..", "../x", `..\x`, "a/b", "a.b", "a%2fb", "a\x00b", strings.Repeat("a", 129)} {
		if validateID(id) == nil {
			t.Errorf("validateID(%q) accepted it", id)
		}
	}
	for _, name := range []string{"a/b", `a\b`, "a\x00b", "..", "a\nb"} {
		if validateMetadata(map[string]string{"filename": name}) == nil {
			t.Errorf("filename %q accepted", name)
		}
	}
	if err := validateMetadata(map[string]string{"filename": "résumé 2026.pdf", "filetype": "application/pdf"}); err != nil {
		t.Errorf("good metadata refused: %v", err)
	}
	if validateMetadata(map[string]string{"bad key": "x"}) == nil {
		t.Errorf("a metadata key with a space accepted")
	}
}
