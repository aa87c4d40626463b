package resumable

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strings"
)

// maxIDLength is the longest upload ID accepted in a URL.
const maxIDLength = 128

// validateID reports why id, taken from a request path, is not the ID of
// an upload this package could have made, or nil. IDs are what newID
// makes, so anything but letters, digits, _ and - is refused before it
// can reach tusd or the disk: tusd's file store joins IDs to paths as
// they are, "../" included.
func validateID(id string) error {
	if id == "" || len(id) > maxIDLength {
		return fmt.Errorf("upload ID must be 1 to %d characters long", maxIDLength)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("upload ID has a character that is not allowed at position %d (allowed: A-Z a-z 0-9 _ -)", i+1)
		}
	}
	return nil
}

// newID returns a fresh upload ID: 128 random bits as 32 hex digits.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	return hex.EncodeToString(b[:])
}

// Limits on metadata values, which become headers of the delivery (and
// the filename a multipart parameter): within what backends accept.
const (
	maxMetadataValue = 4096
	maxFilename      = 255
)

// checkMetadata checks an upload's metadata as the backend will see it
// (see validateMetadata), header being the raw Upload-Metadata, and
// returns it with its keys in lower case, as the delivery looks them up.
func checkMetadata(header string, meta map[string]string) (map[string]string, error) {
	if err := validateMetadata(meta); err != nil {
		return nil, err
	}
	// a key sent twice is one map entry, the last: refuse it too
	seen := make(map[string]string, len(meta))
	for _, element := range strings.Split(header, ",") {
		key, _, _ := strings.Cut(strings.TrimSpace(element), " ")
		if key == "" {
			continue
		}
		if first, ok := seen[foldKey(key)]; ok {
			return nil, sameHeaderError(first, key)
		}
		seen[foldKey(key)] = key
	}
	lower := make(map[string]string, len(meta))
	for key, value := range meta {
		lower[strings.ToLower(key)] = value
	}
	return lower, nil
}

// validateMetadata reports why an upload's metadata is refused, or nil.
// Each entry reaches the backend as a header, Upload-Metadata-<key>, so
// keys are compared as header names are (case-insensitively, and with
// - and _ alike, as CGI-style backends see them): two keys that would
// become one header are refused. Each value must be a header value: no
// control characters (CR, LF, NUL...), at most 4096 bytes. The filename
// (in any case) is also the multipart filename (quoted there): no / or
// \, not . or .., at most 255 bytes; the filetype is the Content-Type:
// a media type. The keys are checked first, then the values, each in
// the keys' order, so that the same metadata always gets the same answer.
func validateMetadata(meta map[string]string) error {
	keys := slices.Sorted(maps.Keys(meta))
	seen := make(map[string]string, len(meta))
	for _, key := range keys {
		if !validHeaderToken(key) {
			return fmt.Errorf("metadata key %q is not valid: letters, digits and -_. only", key)
		}
		if other, ok := seen[foldKey(key)]; ok {
			return sameHeaderError(other, key)
		}
		seen[foldKey(key)] = key
	}
	for _, key := range keys {
		value := meta[key]
		if strings.ContainsFunc(value, isControl) {
			return fmt.Errorf("metadata %s must not contain NUL, CR, LF or other control characters", key)
		}
		if len(value) > maxMetadataValue {
			return fmt.Errorf("metadata %s is longer than %d bytes", key, maxMetadataValue)
		}
		switch strings.ToLower(key) {
		case "filename":
			if err := validateFilename(value); err != nil {
				return fmt.Errorf("metadata %s %w", key, err)
			}
		case "filetype":
			if _, _, err := mime.ParseMediaType(value); err != nil {
				return fmt.Errorf("metadata %s must be a media type such as application/pdf", key)
			}
		}
	}
	return nil
}

// validateFilename says why name cannot be a multipart filename sent
// to the backend; it is never used as a path here, but a name with a
// path in it is a client bug or an attack on the backend.
func validateFilename(name string) error {
	switch {
	case strings.ContainsAny(name, "/\\"):
		return errors.New("must not contain / or \\")
	case name == "." || name == "..":
		return errors.New("must not be . or ..")
	case len(name) > maxFilename:
		return fmt.Errorf("is longer than %d bytes", maxFilename)
	}
	return nil
}

// foldKey is a metadata key as the header it becomes is compared.
func foldKey(key string) string { return strings.ToLower(strings.ReplaceAll(key, "_", "-")) }

func sameHeaderError(a, b string) error {
	return fmt.Errorf("metadata keys %q and %q would reach the backend as the same header (Upload-Metadata-%s); send one", a, b, b)
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// validHeaderToken reports whether key can be the tail of a header name
// (Upload-Metadata-<key>).
func validHeaderToken(key string) bool {
	if key == "" || len(key) > 64 {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// groupHeader makes the created upload a member of a group.
const groupHeader = "X-Upload-Group"

// uploadGroup returns the group the creation request names, "" for
// none; group IDs follow the tracker's rules (progress.ValidateGroupID).
func uploadGroup(r *http.Request) (string, error) {
	values, ok := r.Header[groupHeader]
	if !ok {
		return "", nil
	}
	if err := progress.ValidateGroupID(values[0]); err != nil {
		return "", fmt.Errorf("%s header: %w", groupHeader, err)
	}
	return values[0], nil
}
