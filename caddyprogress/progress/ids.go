package progress

import "fmt"

// MaxIDLength is the longest upload or group ID accepted.
const MaxIDLength = 128

// ValidateID reports why id is not a valid upload ID, or nil if it is.
// Valid IDs are 1 to 128 characters of A-Z a-z 0-9 . _ ~ : -
func ValidateID(id string) error { return ValidateName("upload ID", id) }

// ValidateGroupID reports why id is not a valid group ID: the rules of
// upload IDs.
func ValidateGroupID(id string) error { return ValidateName("group ID", id) }

// ValidateName checks a name (an upload ID, a group ID, a tracker's
// name; noun says which, for the message) against the rules of upload
// IDs.
func ValidateName(noun, name string) error {
	if name == "" {
		return fmt.Errorf("%s is empty", noun)
	}
	if len(name) > MaxIDLength {
		return fmt.Errorf("%s is %d characters long; at most %d are allowed", noun, len(name), MaxIDLength)
	}
	for i := 0; i < len(name); i++ {
		if !IsIDChar(name[i]) {
			return fmt.Errorf("%s has a character that is not allowed at position %d (allowed: A-Z a-z 0-9 . _ ~ : -)", noun, i+1)
		}
	}
	return nil
}

// IsIDChar reports whether c may be in an ID: A-Z a-z 0-9 . _ ~ : -
func IsIDChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c == '.', c == '_', c == '~', c == ':', c == '-':
		return true
	}
	return false
}
