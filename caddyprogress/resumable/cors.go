package resumable

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/tus/tusd/v2/pkg/handler"
)

// anyOrigin in cors_origins lets pages of every origin use the endpoint.
const anyOrigin = "*"

// checkOrigin checks one value of cors_origins: "*", or an origin as a
// browser sends it, scheme://host[:port] without a path.
func checkOrigin(origin string) error {
	if origin == anyOrigin {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Scheme == "" || u.Hostname() == "" || u.Opaque != "" || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.HasSuffix(u.Host, ":") {
		return fmt.Errorf("resumable cors_origins: %q is not an origin: expected * or scheme://host[:port] with no path, e.g. https://app.example.com", origin)
	}
	return nil
}

// checkOrigins checks the cors_origins list: each value an origin or
// "*", and "*" only on its own.
func checkOrigins(origins []string) error {
	for _, o := range origins {
		if err := checkOrigin(o); err != nil {
			return err
		}
		if o == anyOrigin && len(origins) > 1 {
			return fmt.Errorf("resumable cors_origins: %q allows every origin and must stand alone, not next to %q", anyOrigin, strings.Join(origins, " "))
		}
	}
	return nil
}

// corsConfig is tusd's CORS configuration for cors_origins: off without
// origins; otherwise the origins (matched exactly, case aside, or any
// with "*"), credentials only for exact origins, and the request and
// answer headers of this proxy on top of tusd's.
func (c *Config) corsConfig(idHeader string) *handler.CorsConfig {
	if len(c.CORSOrigins) == 0 {
		return &handler.CorsConfig{Disable: true}
	}
	cors := handler.DefaultCorsConfig // a copy
	ours := strings.Join([]string{"X-Upload-Token", groupHeader, "X-Upload-Group-Token", idHeader}, ", ")
	cors.AllowHeaders += ", " + ours
	cors.ExposeHeaders += ", " + ours
	if c.CORSOrigins[0] == anyOrigin {
		cors.AllowOrigin = regexp.MustCompile(`^.*$`)
		cors.AllowCredentials = false
		return &cors
	}
	quoted := make([]string, len(c.CORSOrigins))
	for i, o := range c.CORSOrigins {
		quoted[i] = regexp.QuoteMeta(strings.ToLower(o))
	}
	cors.AllowOrigin = regexp.MustCompile(`^(?i:` + strings.Join(quoted, "|") + `)$`)
	cors.AllowCredentials = true
	return &cors
}

// withoutOwnOrigin returns r without its Origin header when that names
// the proxy's own host (r.Host), as browsers send it on a same-origin
// POST, PATCH or DELETE: such a request is not cross-origin, so tusd,
// which would refuse an Origin not in cors_origins with 403, must not
// see it. r is returned as it is otherwise, or when CORS is off.
func (s *Server) withoutOwnOrigin(r *http.Request) *http.Request {
	origin := r.Header.Get("Origin")
	if s.cors == nil || s.cors.Disable || origin == "" {
		return r
	}
	u, err := url.Parse(origin)
	if err != nil || !strings.EqualFold(u.Host, r.Host) {
		return r
	}
	own := r.WithContext(r.Context()) // a shallow copy, with a header of its own
	own.Header = r.Header.Clone()
	own.Header.Del("Origin")
	return own
}

// addCORS adds the CORS answer headers tusd adds to its own answers to
// an answer this package writes for a tus request (a refusal, or the
// state of an upload past receiving), so that a page of an allowed
// origin sees its status rather than a CORS failure. It does nothing if
// the request's origin is not allowed, or tusd added them already.
func (s *Server) addCORS(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if s.cors == nil || s.cors.Disable || origin == "" || !s.cors.AllowOrigin.MatchString(origin) {
		return
	}
	h := w.Header()
	if h.Get("Access-Control-Allow-Origin") != "" {
		return
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	if s.cors.AllowCredentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", s.cors.AllowMethods)
		h.Set("Access-Control-Allow-Headers", s.cors.AllowHeaders)
		h.Set("Access-Control-Max-Age", s.cors.MaxAge)
	} else {
		h.Set("Access-Control-Expose-Headers", s.cors.ExposeHeaders)
	}
}
