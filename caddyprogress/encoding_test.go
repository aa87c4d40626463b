package caddyprogress

import (
	"bytes"
	"encoding/json"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"testing"
	"time"
)

// A document is made once per change and shared; its JSON is exactly
// what encoding/json makes of the Status, files and all.
func TestStatusDocumentIsSharedUntilTheUploadChanges(t *testing.T) {
	u := newUpload("shared", 1000, time.Now(), progress.StateUploading)
	parts := newPartList(nil)
	u.parts.Store(parts)
	p, _ := parts.add("field", fileName("a.bin"))
	p.received.Store(10)
	u.addReceived(100)
	now := time.Now()
	first := u.doc(now)
	if again := u.doc(now.Add(time.Millisecond)); again != first {
		t.Fatalf("an unchanged upload was encoded again")
	}
	if later := u.doc(now.Add(docMaxAge)); later == first {
		t.Fatalf("a document older than %s was served", docMaxAge)
	}
	u.addReceived(100)
	changed := u.doc(now)
	if changed == first || changed.summary.received != 200 {
		t.Fatalf("after a change: same document %v, received %d", changed == first, changed.summary.received)
	}

	u.finish(progress.StateComplete, 200, "", time.Now())
	final := u.doc(time.Now())
	var buf bytes.Buffer
	final.writeTo(&buf, true)
	want, _ := json.Marshal(u.snapshot(time.Now()))
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("document\n%s\nwant\n%s", buf.Bytes(), want)
	}
	buf.Reset()
	final.writeTo(&buf, false)
	var s Status
	if err := json.Unmarshal(buf.Bytes(), &s); err != nil || s.Files != nil || s.Received != 200 || s.Status != "complete" {
		t.Fatalf("document without files %s (%v)", buf.Bytes(), err)
	}
	if u.doc(time.Now().Add(time.Hour)) != final {
		t.Fatalf("a final document was made again")
	}
}
