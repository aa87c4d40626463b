package caddyprogress

import (
	"errors"
	"fmt"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Limits on what the multipart observer keeps of one upload. A body past
// maxParts or maxHeaderBlock is tracked as a whole.
const (
	maxParts       = 1000     // part entries
	maxNameBytes   = 256      // bytes of a field name or file name
	maxHeaderBlock = 16 << 10 // bytes of one part's header block
)

// The status of one part.
const (
	partUploading = "uploading"
	partComplete  = "complete"
)

// FileStatus is one part of a multipart/form-data upload, as the status
// JSON shows it in "files" (see progress.FileStatus).
type FileStatus = progress.FileStatus

// part is one part of a multipart upload. The observer adds to received
// and sets complete; the status route reads them.
type part struct {
	field    string
	filename *string

	received atomic.Int64
	complete atomic.Bool
}

// partList is the parts of one multipart upload, in the order they came.
// The observer appends under mu (once a part); the counters of each part
// are atomics, so the observer's per-Read work takes no lock.
type partList struct {
	// observed counts the bytes the observer has looked at, so an event
	// stream can tell the parts changed after the upload's received did.
	observed atomic.Int64

	// tracker counts the list's memory toward max_memory; nil for none.
	tracker *tracker

	mu       sync.Mutex
	parts    []*part
	gaveUp   bool  // the body is not usable multipart: the upload is tracked as a whole
	released bool  // the tracker let go of the record: keep nothing more
	charged  int64 // bytes counted toward max_memory for the parts
	bound    int64 // the most the parts take in a document, and in the list it is made from (filesBound)
}

func newPartList(t *tracker) *partList {
	return &partList{parts: make([]*part, 0, 8), tracker: t}
}

// add appends a new part and returns it, or nil when the list already
// holds maxParts parts, or max_memory has no room for it (errNoRoom).
func (l *partList) add(field string, filename *string) (*part, error) {
	l.mu.Lock()
	full, released := len(l.parts) >= maxParts, l.released
	l.mu.Unlock()
	switch {
	case full:
		return nil, errTooManyParts
	case released:
		return nil, errNoRoom
	}
	cost := partBytes(field, filename)
	nameJSON := len(jsonNullJSON)
	if filename != nil {
		nameJSON = jsonStringLen(*filename)
	}
	bound := fileJSONBound(jsonStringLen(field), nameJSON) + jsonFileStatusBytes
	if !l.tracker.charge(cost) { // never while holding l.mu: charge may take the tracker's lock
		return nil, errNoRoom
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released || l.gaveUp {
		l.tracker.uncharge(cost)
		return nil, errNoRoom
	}
	p := &part{field: field, filename: filename}
	l.parts = append(l.parts, p)
	l.charged += cost
	l.bound += bound
	return p, nil
}

// filesBound is the most a document's file list takes while it is made
// from the parts as they are now: its JSON, and the []FileStatus it is
// encoded from. 0 when the upload shows no files.
func (l *partList) filesBound() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.parts) == 0 {
		return 0
	}
	return int64(len(jsonFilesOpen)+len(jsonFilesClose)) + l.bound
}

var (
	errTooManyParts = fmt.Errorf("the body has more than %d parts", maxParts)
	errNoRoom       = errors.New("max_memory has no room for more parts")
)

// giveUp drops the parts: the upload is tracked as a whole from now on.
func (l *partList) giveUp() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gaveUp = true
	l.parts = nil
	l.bound = 0
	l.tracker.uncharge(l.charged)
	l.charged = 0
}

// release keeps nothing more, and returns the bytes the parts counted,
// for the tracker to uncount. The parts stay readable.
func (l *partList) release() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.released = true
	n := l.charged
	l.charged = 0
	return n
}

// statuses describes the parts as they are now; nil when there are
// none, or the observer gave up.
func (l *partList) statuses() []FileStatus {
	l.mu.Lock()
	parts := l.parts[:len(l.parts):len(l.parts)]
	l.mu.Unlock()
	if len(parts) == 0 {
		return nil
	}
	files := make([]FileStatus, len(parts))
	for i, p := range parts {
		// read complete first: once set, received is final
		status := partUploading
		if p.complete.Load() {
			status = partComplete
		}
		files[i] = FileStatus{Field: p.field, Filename: p.filename, Received: p.received.Load(), Status: status}
	}
	return files
}

// files describes the parts of u's multipart body; nil for an upload
// that is not multipart/form-data or whose body was not usable as such.
func (u *upload) files() []FileStatus {
	if l := u.parts.Load(); l != nil {
		return l.statuses()
	}
	return nil
}

// observedBytes counts the body bytes the multipart observer has looked
// at; 0 for other uploads.
func (u *upload) observedBytes() int64 {
	if l := u.parts.Load(); l != nil {
		return l.observed.Load()
	}
	return 0
}

// cleanName makes a field or file name safe to show: invalid UTF-8 is
// replaced by U+FFFD, and the name is cut to at most maxNameBytes bytes,
// on a character boundary.
func cleanName(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxNameBytes {
		return s
	}
	cut := maxNameBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
