// Package demobackend is a demo and test upstream for upload_progress:
// a stand-in for the "legacy upload backend" that an operator puts Caddy
// in front of. It is not part of the upload_progress module; caddy-build
// includes it so that Caddyfile.example runs on its own.
package demobackend

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(Backend{})
	httpcaddyfile.RegisterHandlerDirective("upload_demo_backend", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("upload_demo_backend", httpcaddyfile.Before, "respond")
}

// maxDelay caps the ?delay= query parameter.
const maxDelay = 30 * time.Second

// Backend takes an upload, reads all of it, and answers with JSON:
//
//	{"bytes": 52428800, "sha256": "…", "method": "POST", "upload_id": "…"}
//
// The query parameter delay (e.g. ?delay=2s, at most 30s) makes it wait
// after reading the body and before answering, so the upload's
// "processing" state can be seen; status (e.g. ?status=500) sets the
// answer's status code.
//
// Caddyfile syntax (a terminal handler, ordered before respond):
//
//	upload_demo_backend
type Backend struct{}

// CaddyModule returns the Caddy module information.
func (Backend) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.upload_demo_backend",
		New: func() caddy.Module { return new(Backend) },
	}
}

// answer is the JSON the backend writes.
type answer struct {
	Bytes    int64  `json:"bytes"`
	SHA256   string `json:"sha256"`
	Method   string `json:"method"`
	UploadID string `json:"upload_id,omitempty"`
	Error    string `json:"error,omitempty"`
}

func (Backend) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	query := r.URL.Query()
	code := http.StatusOK
	if s := query.Get("status"); s != "" {
		c, err := strconv.Atoi(s)
		if err != nil || c < 200 || c > 599 {
			return writeAnswer(w, http.StatusBadRequest, answer{Error: fmt.Sprintf("status %q is not a status code from 200 to 599", s)})
		}
		code = c
	}
	var delay time.Duration
	if s := query.Get("delay"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > maxDelay {
			return writeAnswer(w, http.StatusBadRequest, answer{Error: fmt.Sprintf("delay %q is not a duration from 0 to %s", s, maxDelay)})
		}
		delay = d
	}

	hash := sha256.New()
	n, err := io.Copy(hash, r.Body)
	if err != nil {
		return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("reading the upload: %v", err))
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return nil
		}
	}
	return writeAnswer(w, code, answer{
		Bytes:    n,
		SHA256:   hex.EncodeToString(hash.Sum(nil)),
		Method:   r.Method,
		UploadID: r.Header.Get("X-Upload-ID"),
	})
}

func writeAnswer(w http.ResponseWriter, code int, a answer) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	return json.NewEncoder(w).Encode(a)
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	b := new(Backend)
	return b, b.UnmarshalCaddyfile(h.Dispenser)
}

// UnmarshalCaddyfile sets up the backend from Caddyfile tokens. Syntax:
//
//	upload_demo_backend
func (b *Backend) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() || d.NextBlock(0) {
		return d.Err("upload_demo_backend takes no arguments")
	}
	return nil
}

// Interface guards
var (
	_ caddyhttp.MiddlewareHandler = (*Backend)(nil)
	_ caddyfile.Unmarshaler       = (*Backend)(nil)
)
