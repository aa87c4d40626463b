package caddyprogress

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"
)

// countingBody wraps a request body and counts, in its upload, every
// byte a later handler reads from it. It never reads on its own, never
// buffers, and passes every Read result and error through unchanged.
// With a throttle, each Read waits for bandwidth before it returns.
//
// Read is the upload's hot path: unthrottled, it touches atomics only,
// and for a multipart/form-data body it shows the chunk to the multipart
// observer (multipart.go), which locks and allocates only when a part
// begins.
type countingBody struct {
	io.ReadCloser
	upload   *upload
	throttle *throttle       // nil when unthrottled
	ctx      context.Context // the request's; ends a throttle's wait

	// multipart follows the parts of a multipart/form-data body; nil
	// for every other body.
	multipart *multipartObserver

	errMu   sync.Mutex
	readErr error // the first Read error other than io.EOF
}

func (b *countingBody) Read(p []byte) (int, error) {
	if b.throttle != nil && len(p) > b.throttle.maxRead {
		p = p[:b.throttle.maxRead]
	}
	n, err := b.ReadCloser.Read(p)
	if n > 0 && !b.upload.currentState().Final() { // a final record never changes
		b.upload.addReceived(n)
		if b.multipart != nil {
			b.multipart.observe(p[:n])
		}
	}
	if b.throttle != nil && (n > 0 || err == io.EOF) {
		waited, waitErr := b.throttle.wait(b.ctx, n, err == io.EOF || b.upload.allReceived())
		b.upload.throttled.Add(int64(waited))
		if err == nil {
			err = waitErr
		}
	}
	if err != nil {
		b.ended(err)
	}
	return n, err
}

// ended notes how the body ended: io.EOF means all of it was read.
func (b *countingBody) ended(err error) {
	if errors.Is(err, io.EOF) {
		if b.multipart != nil {
			b.multipart.bodyEnded()
		}
		b.upload.markBodyEnded(int64(time.Since(b.upload.startedAt)))
		return
	}
	b.errMu.Lock()
	defer b.errMu.Unlock()
	if b.readErr == nil {
		b.readErr = err
	}
}

// err returns the first Read error other than io.EOF, or nil.
func (b *countingBody) err() error {
	b.errMu.Lock()
	defer b.errMu.Unlock()
	return b.readErr
}
