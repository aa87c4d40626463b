package caddyprogress

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
)

// maxIDLength is the longest upload (or group) ID accepted.
const maxIDLength = 128

// validateID reports why id is not a valid upload ID, or nil if it is.
// Valid IDs are 1 to 128 characters of A-Z a-z 0-9 . _ ~ : -
func validateID(id string) error { return validateName("upload ID", id) }

// validateGroupID reports why id is not a valid group ID: the rules of
// upload IDs.
func validateGroupID(id string) error { return validateName("group ID", id) }

// validateName checks an upload ID, group ID or tracker name (noun, for
// the message) against the rules of upload IDs.
func validateName(noun, id string) error {
	if id == "" {
		return fmt.Errorf("%s is empty", noun)
	}
	if len(id) > maxIDLength {
		return fmt.Errorf("%s is %d characters long; at most %d are allowed", noun, len(id), maxIDLength)
	}
	for i := 0; i < len(id); i++ {
		if !isIDChar(id[i]) {
			return fmt.Errorf("%s has a character that is not allowed at position %d (allowed: A-Z a-z 0-9 . _ ~ : -)", noun, i+1)
		}
	}
	return nil
}

func isIDChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c == '.', c == '_', c == '~', c == ':', c == '-':
		return true
	}
	return false
}

// newID returns a fresh random upload ID: 128 bits from crypto/rand
// as unpadded URL-safe base64 (22 characters, all valid ID characters).
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	return base64.RawURLEncoding.EncodeToString(b[:])
}
