package progress

import (
	"strings"
	"testing"
)

// IDs are 1 to 128 characters of A-Z a-z 0-9 . _ ~ : -, and a refusal
// says which rule the ID broke, naming the kind of ID.
func TestIDRules(t *testing.T) {
	for _, ok := range []string{"a", "Upload-1", "x.y_z~w:v", strings.Repeat("a", MaxIDLength)} {
		if err := ValidateID(ok); err != nil {
			t.Errorf("ValidateID(%q): %v", ok, err)
		}
	}
	for id, says := range map[string]string{
		"":                                 "upload ID is empty",
		strings.Repeat("a", MaxIDLength+1): "at most 128",
		"a/b":                              "position 2",
		"a b":                              "position 2",
		"é":                                "position 1",
	} {
		if err := ValidateID(id); err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("ValidateID(%q) = %v, want an error saying %q", id, err, says)
		}
	}
	if err := ValidateGroupID("a/b"); err == nil || !strings.HasPrefix(err.Error(), "group ID ") {
		t.Errorf("ValidateGroupID: %v", err)
	}
}
