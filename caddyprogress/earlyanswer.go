package caddyprogress

import (
	"io"
	"net/http"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// earlyAnswerCloser closes an HTTP/1 connection after an answer that
// goes out before the upload's body ended (an early 413 or 502, or an
// upstream that answers without reading), by setting Connection: close
// on it. The unread rest of the body must never be parsed as the next
// request on the connection: Caddy wraps the request body in its idle
// timeout reader, and then net/http's own check for an unfinished body
// no longer closes such a connection once the body has been closed.
type earlyAnswerCloser struct {
	*caddyhttp.ResponseWriterWrapper
	upload      *upload
	wroteHeader bool
}

func (w *earlyAnswerCloser) WriteHeader(code int) {
	if code >= http.StatusOK && !w.wroteHeader {
		w.wroteHeader = true
		w.closeIfUnfinished()
	}
	w.ResponseWriterWrapper.WriteHeader(code)
}

func (w *earlyAnswerCloser) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriterWrapper.Write(p)
}

func (w *earlyAnswerCloser) ReadFrom(r io.Reader) (int64, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriterWrapper.ReadFrom(r)
}

// closeIfUnfinished sets Connection: close if the body has not ended.
// serveUpload calls it too before an error goes back to Caddy, whose
// error answer is written past this wrapper.
func (w *earlyAnswerCloser) closeIfUnfinished() {
	if w.upload.currentState() == progress.StateUploading {
		w.Header().Set("Connection", "close")
	}
}

// Interface guards
var (
	_ http.ResponseWriter = (*earlyAnswerCloser)(nil)
	_ io.ReaderFrom       = (*earlyAnswerCloser)(nil)
)
