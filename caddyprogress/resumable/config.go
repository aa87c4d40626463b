// Package resumable accepts resumable uploads (tus 1.0 and, optionally,
// the IETF "Resumable Uploads for HTTP" draft) through the tusd library,
// keeps their bytes in a store (a folder, or a bucket of an
// S3-compatible service) across interruptions and restarts, and once the last byte is in, delivers the whole file to the
// backend as the one plain request it already understands.
//
// It serves the resumable block of the upload_progress handler
// (package caddyprogress), which tracks each upload through the Tracker
// interface this package declares.
package resumable

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Defaults for the Config's fields.
const (
	DefaultMaxSize        = 10 << 30 // 10GiB
	DefaultExpire         = 24 * time.Hour
	DefaultDeliverMethod  = http.MethodPost
	DefaultDeliverRetries = 5
	DefaultReserveFor     = 5 * time.Minute
)

// Delivery formats (deliver_as).
const (
	DeliverRaw       = "raw"
	DeliverMultipart = "multipart"
)

// Config is the resumable block of upload_progress:
//
//	resumable /files/ {
//		dir             <folder>
//		s3              s3://<bucket>[/<prefix>] {
//			endpoint   <url>
//			region     <region>
//			path_style
//		}
//		max_size        <size>
//		max_disk        <size>
//		expire          <duration>
//		reserve_for     <duration>
//		deliver_to      <path>
//		deliver_method  <method>
//		deliver_as      raw | multipart <field>
//		deliver_retries <n>
//		ietf_draft
//		cors_origins    <origin...> | *
//	}
//
// JSON: {"resumable": {"path": "/files/", "deliver_to": "/upload", ...}}
// inside the upload_progress handler, with the same names as fields.
type Config struct {
	// The tus endpoint: POST <path> creates an upload, <path><id> is the
	// upload. Must start and end with /. Required.
	Path string `json:"path,omitempty"`

	// The folder where partial and undelivered uploads live (0700, its
	// files 0600). Default: Caddy's data dir +
	// "/upload_progress/<tracker>", which two handlers of one config may
	// not share. Handlers that name the same dir share it, and must have
	// the same settings; each one's uploads are still served and
	// delivered only through it. Not with s3.
	Dir string `json:"dir,omitempty"`

	// Keep the uploads in a bucket of an S3-compatible service instead
	// of a folder (S3Config). Handlers that name the same bucket (and
	// prefix, and endpoint) share it, as for dir. Default: none, the
	// uploads are in dir.
	S3 *S3Config `json:"s3,omitempty"`

	// The largest upload accepted in bytes, sent as Tus-Max-Size; larger
	// ones are refused with 413. Default: 10GiB.
	MaxSize int64 `json:"max_size,omitempty"`

	// The bytes all partial and undelivered uploads in dir may take
	// together, counted as bytes are written: a creation whose length
	// does not fit is refused with 507, and a body without a length
	// (chunked, HTTP/2) stops at the room left with 507. With redis on
	// the tracker, one budget for every instance that shares dir, counted
	// in Redis. Default: no limit.
	MaxDisk int64 `json:"max_disk,omitempty"`

	// How long an upload keeps max_disk room reserved for the bytes it
	// has announced (Upload-Length) but not sent, after its creation or
	// its last request; then it holds only what it stored, and its next
	// PATCH reserves the rest again (507 if the room is gone).
	// Default: 5m.
	ReserveFor caddy.Duration `json:"reserve_for,omitempty"`

	// How long an unfinished upload is kept after its last byte (or its
	// creation, before any byte), and a failed delivery after it failed.
	// Default: 24h.
	Expire caddy.Duration `json:"expire,omitempty"`

	// The request path the assembled upload is delivered to, through
	// the route's next handler (usually reverse_proxy). Required.
	DeliverTo string `json:"deliver_to,omitempty"`

	// The method of the delivery request. Default: POST.
	DeliverMethod string `json:"deliver_method,omitempty"`

	// How the file is delivered: "raw" (the file as the body, its
	// Content-Type from the filetype metadata) or "multipart" (one-file
	// multipart/form-data in the field deliver_field, with the filename
	// metadata). Default: raw.
	DeliverAs string `json:"deliver_as,omitempty"`

	// The form field of a multipart delivery. Default: "file".
	DeliverField string `json:"deliver_field,omitempty"`

	// How often a delivery that failed for a transient reason (no
	// connection, 502, 503, 504, a timeout) is retried in the background,
	// the first retry after 1s and each wait doubling up to 30s.
	// Default: 5. Use -1 for none.
	DeliverRetries int `json:"deliver_retries,omitempty"`

	// Also accept the IETF draft (interop versions 3 to 6) next to
	// tus 1.0. Default: off.
	IETFDraft bool `json:"ietf_draft,omitempty"`

	// The origins whose pages may use the endpoint from a browser
	// (CORS, for tus-js-client or Uppy on another origin): each one
	// scheme://host[:port] with no path, e.g. "https://app.example.com",
	// matched exactly (case aside), or ["*"] alone for every origin. An
	// exact origin may send credentials (cookies, Authorization); "*"
	// may not. Answers to a request from an allowed origin carry the
	// CORS headers, exposing the tus headers (Location, Upload-Offset,
	// Upload-Length, Tus-*) and X-Upload-Token, X-Upload-Group-Token and
	// the ID header; a request from another origin gets 403 (one whose
	// Origin names the proxy's own host is not cross-origin). Default:
	// none, no CORS headers (a page of another origin cannot upload).
	CORSOrigins []string `json:"cors_origins,omitempty"`

	defaultDir bool // Dir was not set: SetDefaults chose it
}

// SetDefaults fills in what is not set; tracker names the default dir.
func (c *Config) SetDefaults(tracker string) {
	if c.Dir == "" && c.S3 == nil {
		c.Dir = filepath.Join(caddy.AppDataDir(), "upload_progress", tracker)
		c.defaultDir = true
	}
	if c.MaxSize == 0 {
		c.MaxSize = DefaultMaxSize
	}
	if c.Expire == 0 {
		c.Expire = caddy.Duration(DefaultExpire)
	}
	if c.ReserveFor == 0 {
		c.ReserveFor = caddy.Duration(DefaultReserveFor)
	}
	if c.DeliverMethod == "" {
		c.DeliverMethod = DefaultDeliverMethod
	}
	if c.DeliverAs == "" {
		c.DeliverAs = DeliverRaw
	}
	if c.DeliverAs == DeliverMultipart && c.DeliverField == "" {
		c.DeliverField = "file"
	}
	if c.DeliverRetries == 0 {
		c.DeliverRetries = DefaultDeliverRetries
	}
}

// Validate checks the configuration, after SetDefaults.
func (c *Config) Validate() error {
	if c.S3 != nil {
		if c.Dir != "" {
			return fmt.Errorf("resumable dir %q and s3 %q: the uploads live in one store; set one of them", c.Dir, c.S3.URL)
		}
		if err := c.S3.validate(); err != nil {
			return err
		}
	}
	if !strings.HasPrefix(c.Path, "/") || !strings.HasSuffix(c.Path, "/") {
		return fmt.Errorf("resumable path %q must start and end with /", c.Path)
	}
	if !strings.HasPrefix(c.DeliverTo, "/") {
		return fmt.Errorf("resumable deliver_to %q is required and must start with /", c.DeliverTo)
	}
	if strings.HasPrefix(c.DeliverTo, c.Path) {
		return fmt.Errorf("resumable deliver_to %q must not be under the tus endpoint %q", c.DeliverTo, c.Path)
	}
	if c.DeliverMethod == "" || strings.ContainsAny(c.DeliverMethod, " \t/") {
		return fmt.Errorf("resumable deliver_method %q is not a valid HTTP method", c.DeliverMethod)
	}
	switch c.DeliverAs {
	case DeliverRaw:
	case DeliverMultipart:
		if c.DeliverField == "" || strings.ContainsAny(c.DeliverField, "\"\r\n") {
			return fmt.Errorf("resumable deliver_as multipart: field name %q is not valid", c.DeliverField)
		}
	default:
		return fmt.Errorf("resumable deliver_as %q must be raw or multipart", c.DeliverAs)
	}
	if c.MaxSize < 1 || c.MaxDisk < 0 || c.Expire <= 0 {
		return fmt.Errorf("resumable max_size and expire must be positive, max_disk must not be negative")
	}
	if c.ReserveFor <= 0 {
		return fmt.Errorf("resumable reserve_for %s must be longer than zero", time.Duration(c.ReserveFor))
	}
	if c.DeliverRetries < -1 {
		return fmt.Errorf("resumable deliver_retries must be -1 (none) or more")
	}
	return checkOrigins(c.CORSOrigins)
}

// retries is how many retries deliver_retries allows.
func (c *Config) retries() int { return max(c.DeliverRetries, 0) }

func (c *Config) expire() time.Duration { return time.Duration(c.Expire) }

func (c *Config) reserveFor() time.Duration { return time.Duration(c.ReserveFor) }

// storeSetting names the setting of the store, with its value, for
// errors.
func (c *Config) storeSetting() string {
	if c.S3 != nil {
		return fmt.Sprintf("resumable s3 %q", c.S3.URL)
	}
	return fmt.Sprintf("resumable dir %q", c.Dir)
}

// s3 is the S3 settings, zero without s3.
func (c *Config) s3() S3Config {
	if c.S3 == nil {
		return S3Config{}
	}
	return *c.S3
}

// differsFrom names the first setting in which c and o differ, with
// both values ("" if none): handlers sharing a store must agree, as each
// one's settings would otherwise apply to the other's uploads.
func (c *Config) differsFrom(o *Config) string {
	settings := []struct {
		name string
		a, b any
	}{
		{"path", c.Path, o.Path},
		{"max_size", c.MaxSize, o.MaxSize},
		{"max_disk", c.MaxDisk, o.MaxDisk},
		{"expire", c.expire(), o.expire()},
		{"reserve_for", c.reserveFor(), o.reserveFor()},
		{"deliver_to", c.DeliverTo, o.DeliverTo},
		{"deliver_method", c.DeliverMethod, o.DeliverMethod},
		{"deliver_as", c.DeliverAs, o.DeliverAs},
		{"deliver_as multipart <field>", c.DeliverField, o.DeliverField},
		{"deliver_retries", c.DeliverRetries, o.DeliverRetries},
		{"ietf_draft", c.IETFDraft, o.IETFDraft},
		{"cors_origins", strings.Join(c.CORSOrigins, " "), strings.Join(o.CORSOrigins, " ")},
		{"s3 region", c.s3().Region, o.s3().Region},
		{"s3 path_style", c.s3().PathStyle, o.s3().PathStyle},
	}
	for _, s := range settings {
		if s.a != s.b {
			return fmt.Sprintf("%s (%v in one, %v in the other)", s.name, s.a, s.b)
		}
	}
	return ""
}
