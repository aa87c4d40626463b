package caddyprogress

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/resumable"
)

// A status document is encoded once per upload per change and shared
// by every poller and subscriber of that upload: nobody takes a
// snapshot or encodes JSON of their own. It is kept in two pieces, so
// that a group's document can take its members' statuses without their
// files:
//
//	head  {"id":"...","status":"uploading",...,"rate_limit":null   (no closing brace)
//	files ,"files":[...]                                            (empty without files)
//
// The status JSON is head, files and "}", exactly what encoding/json
// makes of Status (Files is its last field).

// docMaxAge is how long an upload's document is served while nothing
// changes, before elapsed, speed and remaining are brought up to date.
const docMaxAge = speedSampleSpread

// docVersion is what tells whether an upload changed.
type docVersion struct {
	state     state
	received  int64
	observed  int64             // the multipart parts change after received does
	resumable resumable.Version // a resumable upload's delivery changes while its state does not
}

// statusDoc is one encoding of an upload's status, never changed once
// made.
type statusDoc struct {
	id          string // set for a group's members, to order them
	head, files []byte
	version     docVersion
	madeAt      time.Time
	summary     docSummary
}

// docSummary is what a group's figures are summed from. It holds no
// pointers, so finished records can keep it cheaply.
type docSummary struct {
	state     state
	received  int64
	total     int64 // -1 when unknown
	speed     int64
	startedAt int64 // unix nanoseconds
	bodyEndAt int64 // unix nanoseconds when the body ended, 0 before
}

// version reads what the upload's document depends on.
func (u *upload) version() docVersion {
	return docVersion{state: u.currentState(), received: u.received.Load(), observed: u.observedBytes(), resumable: u.resumableVersion()}
}

// doc returns the upload's document as of now: the shared one while the
// upload is unchanged (and, in flight, younger than docMaxAge), else a
// new one made by this caller, once, while others wait for it. A new
// one is counted toward max_memory before it is made (the most it can
// take, from its parts' names), and kept as the shared one; nil when
// max_memory has no room for it: the caller answers 503 or tries later.
func (u *upload) doc(now time.Time) *statusDoc {
	if d, _ := u.reusable(&u.liveDoc, now); d != nil {
		return d
	}
	u.encodeMu.Lock()
	defer u.encodeMu.Unlock()
	d, v := u.reusable(&u.liveDoc, now)
	if d != nil {
		return d
	}
	bound := u.docBound()
	if !u.tracker.charge(bound) {
		return nil
	}
	s := u.snapshot(now)
	if s.FinishedAt != nil { // it ended meanwhile
		u.tracker.uncharge(bound)
		return u.finalDoc.Load()
	}
	d = encodeDoc(s, u.startedAt, u.bodyEnd.Load())
	d.version, d.madeAt = v, now
	// the snapshot's file list is garbage now; a part added since the
	// bound was taken is counted here (negative: a few hundred bytes)
	u.tracker.uncharge(bound - docBytes(d))
	u.keepLiveDoc(d)
	return d
}

// docBound is the most a new document of the upload takes while it is
// made: the document itself, and the file list it is encoded from.
func (u *upload) docBound() int64 {
	n := headReserveBytes
	if l := u.parts.Load(); l != nil {
		n += l.filesBound()
	}
	return n
}

// reusable returns the upload's final document, or the one in slot
// while it is current, with the version it was checked against (nil
// when a new one must be made, of that version).
func (u *upload) reusable(slot *atomic.Pointer[statusDoc], now time.Time) (*statusDoc, docVersion) {
	if d := u.finalDoc.Load(); d != nil {
		return d, docVersion{}
	}
	v := u.version()
	if d := slot.Load(); d.current(v, now) {
		return d, v
	}
	return nil, v
}

// current reports whether d (nil for none) is a document of version v
// young enough, at now, to be served as it is.
func (d *statusDoc) current(v docVersion, now time.Time) bool {
	return d != nil && d.version == v && now.Sub(d.madeAt) < docMaxAge
}

// keepLiveDoc keeps d, already counted, as the upload's shared
// document, in place of the one before.
func (u *upload) keepLiveDoc(d *statusDoc) {
	if old := u.liveDoc.Swap(d); old != nil {
		u.tracker.uncharge(docBytes(old))
	}
	if u.finalDoc.Load() != nil || u.released.Load() { // it ended, or was let go, meanwhile
		if d := u.liveDoc.Swap(nil); d != nil {
			u.tracker.uncharge(docBytes(d))
		}
	}
}

// memberDoc returns a document of the upload without its files, as a
// group's status and events show each member: the shared document
// while it is current (written without its files), else the upload's
// own head, made without encoding a single part. The head is counted
// with the live record (recordBytes reserves headReserveBytes for it),
// so it never needs room of its own; a final upload's document is its
// final one.
func (u *upload) memberDoc(now time.Time) *statusDoc {
	d, v := u.reusable(&u.liveDoc, now)
	if d != nil {
		return d
	}
	if d := u.liveHead.Load(); d.current(v, now) {
		return d
	}
	u.encodeMu.Lock()
	defer u.encodeMu.Unlock()
	if d, v = u.reusable(&u.liveHead, now); d != nil {
		return d
	}
	s := u.liveStatus(now)
	if s.FinishedAt != nil { // it ended meanwhile
		return u.finalDoc.Load()
	}
	d = encodeDoc(s, u.startedAt, u.bodyEnd.Load())
	d.version, d.madeAt = v, now
	if docBytes(d) <= headReserveBytes && !u.released.Load() {
		u.liveHead.Store(d)
	}
	return d
}

// encodeDoc encodes s; bodyEnd is the upload's, in nanoseconds after it
// started (0 before the body ended).
func encodeDoc(s Status, startedAt time.Time, bodyEnd int64) *statusDoc {
	files := s.Files
	s.Files = nil
	head, err := json.Marshal(s)
	if err != nil { // Status has nothing encoding/json refuses
		panic(fmt.Sprintf("encoding a status: %v", err))
	}
	d := &statusDoc{id: s.ID, head: head[:len(head)-1]}
	if len(files) > 0 {
		d.files = appendFiles(make([]byte, 0, filesJSONLen(files)), files)
	}
	d.summary = docSummary{
		state:     progress.NamedState(s.Status),
		received:  s.Received,
		total:     -1,
		speed:     s.Speed,
		startedAt: startedAt.UnixNano(),
	}
	if s.Total != nil {
		d.summary.total = *s.Total
	}
	if bodyEnd > 0 {
		d.summary.bodyEndAt = startedAt.UnixNano() + bodyEnd
	}
	return d
}

// size is the length of the document's JSON.
func (d *statusDoc) size() int { return len(d.head) + len(d.files) + 1 }

// writeTo writes the document's JSON, its files included or not.
func (d *statusDoc) writeTo(w io.Writer, withFiles bool) error {
	if _, err := w.Write(d.head); err != nil {
		return err
	}
	if withFiles && len(d.files) > 0 {
		if _, err := w.Write(d.files); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, "}")
	return err
}

// errNoRoomForDoc is the answer when max_memory has no room to encode
// an upload's status.
var errNoRoomForDoc = errors.New("the tracker's max_memory has no room to encode this status now; try again shortly")

// writeNoRoomForDoc answers 503 with Retry-After: max_memory has no
// room for the document the request needs.
func writeNoRoomForDoc(w http.ResponseWriter) error {
	w.Header().Set("Retry-After", "1")
	return writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": errNoRoomForDoc.Error()})
}

// writeDoc answers with the document as JSON, never cached.
func writeDoc(w http.ResponseWriter, r *http.Request, d *statusDoc) error {
	header := w.Header()
	header.Set("Content-Type", "application/json")
	header.Set("Cache-Control", "no-store")
	header.Set("Content-Length", strconv.Itoa(d.size()+1))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	if err := d.writeTo(w, true); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}
