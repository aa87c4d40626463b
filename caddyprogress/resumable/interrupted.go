package resumable

import (
	"context"
	"io"
	"net/http"

	"github.com/tus/tusd/v2/pkg/handler"
)

// A request that holds an upload's lock is asked to let go when another
// request wants it (a client resuming through another connection, here
// or on another instance): tusd then stops it and answers 400
// ERR_UPLOAD_INTERRUPTED, which tus clients take for a failure they do
// not retry. The upload is only locked by another request, so such a
// request is answered as tus answers a locked upload: 423 Locked, with
// Retry-After and a JSON error, which tus clients retry (asking HEAD for
// the offset, which keeps the bytes the interrupted request stored).

// releaseMarkingLocker is tusd's Locker, marking the request whose lock
// another request asked for (requestState.interrupted).
type releaseMarkingLocker struct{ handler.Locker }

func (l releaseMarkingLocker) NewLock(id string) (handler.Lock, error) {
	lock, err := l.Locker.NewLock(id)
	if err != nil {
		return nil, err
	}
	return releaseMarkingLock{lock: lock}, nil
}

type releaseMarkingLock struct{ lock handler.Lock }

// Lock runs in the request's context (tusd derives ctx from it), which
// carries its requestState.
func (l releaseMarkingLock) Lock(ctx context.Context, requestRelease func()) error {
	st, _ := ctx.Value(stateKey{}).(*requestState)
	return l.lock.Lock(ctx, func() {
		if st != nil {
			st.interrupted.Store(true)
		}
		requestRelease()
	})
}

// answerInterrupted answers tusd's 400 of an interrupted request as 423
// (see above); it reports whether it did.
func (w *tusdWriter) answerInterrupted(code int) bool {
	if code != http.StatusBadRequest || !w.st.interrupted.Load() || w.hidden || w.st.answered {
		return false
	}
	h := w.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "application/json")
	h.Set("Retry-After", "1")
	w.hidden = true
	w.ResponseWriter.WriteHeader(http.StatusLocked)
	if w.r.Method != http.MethodHead {
		_, _ = io.WriteString(w.ResponseWriter, `{"error":"another request took this upload over; ask HEAD for its offset and go on from there"}`+"\n")
	}
	return true
}

func (l releaseMarkingLock) Unlock() error { return l.lock.Unlock() }

// Interface guards
var (
	_ handler.Locker = releaseMarkingLocker{}
	_ handler.Lock   = releaseMarkingLock{}
)
