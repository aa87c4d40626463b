package resumable

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
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

// validateMetadata reports why an upload's metadata is refused, or nil.
// The filename is sent to the backend (multipart filename, a header),
// never used as a path here, but a name with a path separator or a
// control character is a client bug or an attack on the backend.
func validateMetadata(meta map[string]string) error {
	if name, ok := meta["filename"]; ok {
		if strings.ContainsAny(name, "/\\") {
			return fmt.Errorf("metadata filename must not contain / or \\")
		}
		if strings.ContainsFunc(name, isControl) {
			return fmt.Errorf("metadata filename must not contain NUL or other control characters")
		}
		if name == "." || name == ".." {
			return fmt.Errorf("metadata filename must not be . or ..")
		}
	}
	for key, value := range meta {
		if !validHeaderToken(key) {
			return fmt.Errorf("metadata key %q is not valid: letters, digits and -_. only", key)
		}
		if strings.ContainsFunc(value, isControl) && key != "filename" {
			return fmt.Errorf("metadata %q must not contain control characters", key)
		}
	}
	return nil
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
// none; group IDs follow the tracker's rules: 1 to 128 characters of
// A-Z a-z 0-9 . _ ~ : -
func uploadGroup(r *http.Request) (string, error) {
	values, ok := r.Header[groupHeader]
	if !ok {
		return "", nil
	}
	g := values[0]
	if g == "" || len(g) > maxIDLength {
		return "", fmt.Errorf("%s header: a group ID is 1 to %d characters long", groupHeader, maxIDLength)
	}
	for i := 0; i < len(g); i++ {
		c := g[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._~:-", c) >= 0) {
			return "", fmt.Errorf("%s header: the group ID has a character that is not allowed at position %d (allowed: A-Z a-z 0-9 . _ ~ : -)", groupHeader, i+1)
		}
	}
	return g, nil
}
