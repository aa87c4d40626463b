package progress

import (
	"encoding/json"
	"testing"
)

// A group's status is one flat JSON object: its head's fields beside
// "uploads", as the routes have always written it.
func TestGroupStatusIsFlat(t *testing.T) {
	total := int64(10)
	g := GroupStatus{GroupHead: GroupHead{Group: "g", Status: "uploading", Received: 4, Total: &total, Speed: 2},
		Uploads: []Status{{ID: "a", Status: "uploading"}}}
	b, err := json.Marshal(g)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"group", "status", "received", "total", "percent", "speed", "uploads"} {
		if _, ok := fields[key]; !ok {
			t.Errorf("%s has no %q", b, key)
		}
	}
	if len(fields) != 7 {
		t.Errorf("%s has %d fields, want 7", b, len(fields))
	}
	var back GroupStatus
	if err := json.Unmarshal(b, &back); err != nil || back.Received != 4 || back.Group != "g" || len(back.Uploads) != 1 {
		t.Errorf("decoded back: %+v (%v)", back, err)
	}
}
