package caddyprogress

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// A group's hash holds each member's document without its files,
// wherever "files" sits and whatever its names hold.
func TestSummaryLeavesOutFiles(t *testing.T) {
	tricky := `a"],"files":[{"x":"]}`
	files := []FileStatus{
		{Field: tricky, Filename: &tricky, Received: 3, Status: partComplete},
		{Field: "{[<>]}", Status: partUploading},
	}
	s := Status{ID: "member", Status: "uploading", Received: 7, Files: files}
	d := encodeDoc(s, time.Now(), 0)
	if got, want := string(summaryJSON(docJSON(d))), string(d.head)+"}"; got != want {
		t.Fatalf("summary of the core's document:\n%s\nwant\n%s", got, want)
	}
	// a document with its keys sorted (redistracker's DefaultLostDoc):
	// "files" between other fields
	var m map[string]any
	if err := json.Unmarshal(docJSON(d), &m); err != nil {
		t.Fatal(err)
	}
	sorted, _ := json.Marshal(m)
	var back map[string]any
	if err := json.Unmarshal(summaryJSON(sorted), &back); err != nil {
		t.Fatalf("summary of %s: %v", sorted, err)
	}
	delete(m, "files")
	if len(back) != len(m) || back["id"] != "member" || back["received"] != float64(7) || back["files"] != nil {
		t.Fatalf("summary of a sorted document: %v", back)
	}
	if plain := []byte(`{"id":"p","status":"complete"}`); string(summaryJSON(plain)) != string(plain) {
		t.Fatal("a document without files changed")
	}
}

// A document past maxSharedDoc goes to Redis without its files, marked
// files_truncated, and is counted; a smaller one goes whole.
func TestSharedDocumentsAreCapped(t *testing.T) {
	e := &sharedEntry{}
	small := encodeDoc(Status{ID: "s", Status: "complete", Files: []FileStatus{{Field: "f", Status: partComplete}}}, time.Now(), 0)
	if got := e.capped(small); string(got) != string(docJSON(small)) || e.truncated.Load() != 0 {
		t.Fatalf("a small document: %s, %d truncated", got, e.truncated.Load())
	}
	name := strings.Repeat("<", 256)
	big := make([]FileStatus, 1000)
	for i := range big {
		big[i] = FileStatus{Field: name, Filename: &name, Status: partComplete}
	}
	d := encodeDoc(Status{ID: "b", Status: "complete", Files: big}, time.Now(), 0)
	got := e.capped(d)
	var s Status
	if err := json.Unmarshal(got, &s); err != nil || len(got) > maxSharedDoc || s.Files != nil || !s.FilesTruncated || s.ID != "b" || e.truncated.Load() != 1 {
		t.Fatalf("a %d-byte document went as %d bytes: %v %+v, %d truncated", d.size(), len(got), err, s, e.truncated.Load())
	}
}
