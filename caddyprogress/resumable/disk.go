package resumable

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Disk accounting (max_disk). Each upload reserves, in its spool, the
// bytes it takes or may take; all reservations together stay within
// max_disk:
//
//   - a creation of known length reserves that length (507 if it does
//     not fit), a PATCH of an upload of known length reserves it again
//     if its reservation lapsed;
//   - every request body is read through a diskBody, which grows the
//     upload's reservation as bytes arrive, so a body without a length
//     (chunked, HTTP/2, a deferred length) stops at the room left: the
//     bytes that fit are stored (HEAD says so), and the request is
//     answered 507; it also stops an upload at max_size (413), which
//     tusd does not check for a deferred length sent with a
//     Content-Length;
//   - after a request, an upload holds what it stored, plus the rest of
//     its length for reserve_for (the sweeper then lets that go), so
//     creations that never send a byte cannot keep the store full.
//
// The reservations are counted in the spool's Budget (budget.go): this
// process's, or, with max_disk and redis, one count per store for every
// instance that shares it (Coordinator.Budget), which a body grows a
// larger step at a time (Budget.Step) to spare round trips.
//
// A refused body leaves nothing the client cannot resume: a creation
// whose body was refused (its client never got the URL), or an upload of
// deferred length that went past max_size, is removed.

// grow raises what upload id reserves towards want, as far as limit
// allows (0: no limit), and returns what it reserves then.
func (sp *spool) grow(id string, want, limit int64) int64 {
	return sp.disk().Grow(id, want, limit)
}

// settle sets what upload id reserves after a request: what it stored
// (on disk, so taken whatever the limit), or for an upload of known
// length (keep > stored) what it held, up to keep.
func (sp *spool) settle(id string, stored, keep int64) {
	sp.disk().Settle(id, stored, keep)
}

// diskBody is a request body that ends where the upload's reservation
// can grow no more: its Read then fails with the 507 tusd answers with,
// unless the body has ended anyway.
type diskBody struct {
	io.ReadCloser
	sp      *spool
	id      string
	limit   int64 // max_disk
	maxSize int64 // max_size: no upload goes past it, deferred length or not
	pos     int64 // the upload's offset once the bytes read so far are stored
	held    int64 // what the upload reserves; read at the first Read, once tusd holds the upload's lock
	step    int64 // how much the reservation grows at a time (Budget.Step)
	started bool
	err     error
	probe   [1]byte
}

// limitBody makes r's body a diskBody for upload id, whose bytes start
// at offset.
func (s *Server) limitBody(r *http.Request, id string, offset int64) {
	if r.Body == nil || r.Body == http.NoBody {
		return
	}
	r.Body = &diskBody{ReadCloser: r.Body, sp: s.spool, id: id, limit: s.cfg.MaxDisk, maxSize: s.cfg.MaxSize, pos: offset,
		step: s.spool.disk().Step()}
}

func (b *diskBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if !b.started || b.pos+int64(len(p)) > b.held {
		// at the first Read, what the upload reserves is read, and grown
		// only if this read needs it, in one call (one round trip with a
		// shared Budget); later, a step at a time
		want := b.pos + max(int64(len(p)), b.step)
		if !b.started {
			want = b.pos + int64(len(p))
		}
		b.started = true
		b.held = b.sp.grow(b.id, want, b.limit)
	}
	room := min(b.held, b.maxSize) - b.pos
	if room <= 0 {
		// the store is full, or the upload at max_size: the body may
		// only end here
		n, err := b.ReadCloser.Read(b.probe[:])
		if n == 0 {
			return 0, err
		}
		b.err = storeFull()
		if b.pos >= b.maxSize {
			b.err = tooLarge(b.maxSize)
		}
		return 0, b.err
	}
	if int64(len(p)) > room {
		p = p[:room]
	}
	n, err := b.ReadCloser.Read(p)
	b.pos += int64(n)
	return n, err
}

// storeFull is the error of a body or creation that does not fit in
// max_disk; tusd answers it as it is.
func storeFull() error {
	return jsonError("ERR_STORE_FULL", http.StatusInsufficientStorage,
		"the proxy's upload store is full (max_disk); try again later")
}

// tooLarge is the error of a body that goes past max_size (an upload of
// deferred length with a Content-Length tusd does not compare with it).
func tooLarge(maxSize int64) error {
	return jsonError("ERR_MAX_SIZE_EXCEEDED", http.StatusRequestEntityTooLarge,
		fmt.Sprintf("the upload is larger than the %d bytes allowed (max_size)", maxSize))
}

// releaseHold lets an idle upload's reservation of bytes it has not sent
// go once reserve_for has passed since its creation or last request:
// from then on it holds what it stored.
func (s *Server) releaseHold(e *entry, rec *deliveryRecord, now time.Time) {
	since := s.lastByte(rec)
	switch at := e.heldSince.Load(); {
	case at < 0:
		return // released already, and no request since
	case at > 0 && time.Unix(0, at).After(since):
		since = time.Unix(0, at)
	}
	if now.Before(since.Add(s.cfg.reserveFor())) {
		return
	}
	info, err := s.uploadInfo(context.Background(), e.id)
	if err != nil {
		return
	}
	s.spool.settle(e.id, info.Offset, info.Offset)
	e.heldSince.Store(-1)
}
