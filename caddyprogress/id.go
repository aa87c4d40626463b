package caddyprogress

import (
	"crypto/rand"
	"encoding/base64"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
)

// validateID and validateGroupID are the rules of upload and group IDs
// (progress.ValidateID, progress.ValidateGroupID), as the routes call them.
func validateID(id string) error      { return progress.ValidateID(id) }
func validateGroupID(id string) error { return progress.ValidateGroupID(id) }

// newID returns a fresh random upload ID: 128 bits from crypto/rand
// as unpadded URL-safe base64 (22 characters, all valid ID characters).
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	return base64.RawURLEncoding.EncodeToString(b[:])
}
